package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"
)

// clientHello records the first bytes a TLS client sends for serverName.
func clientHello(t testing.TB, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Handshake()
		a.Close()
	}()
	b.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	return buf[:n]
}

// TestTLSRouteClientHelloSNI: the sidecar reads a ClientHello's SNI and
// gives back every byte it took, whatever the first bytes are.
func TestTLSRouteClientHelloSNI(t *testing.T) {
	hello := clientHello(t, "api.prod.svc.cluster.local")
	for _, tt := range []struct {
		name   string
		in     []byte
		record int // bytes consumed
		sni    string
	}{
		{"client hello", append(append([]byte{}, hello...), "after"...), len(hello), "api.prod.svc.cluster.local"},
		{"no sni", clientHello(t, ""), -1, ""},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), 0, ""},
		{"cut short", hello[:len(hello)-10], len(hello) - 10, ""},
		{"record too long", []byte{0x16, 3, 1, 0x40, 0x01, 1}, 0, ""},
		{"empty record", []byte{0x16, 3, 1, 0, 0}, 0, ""},
		{"handshake record that is no hello", []byte{0x16, 3, 1, 0, 4, 2, 0, 0, 0}, 9, ""},
	} {
		br := bufio.NewReader(bytes.NewReader(tt.in))
		record, sni := readClientHello(br)
		rest, _ := io.ReadAll(br)
		if sni != tt.sni {
			t.Errorf("%s: SNI %q, want %q", tt.name, sni, tt.sni)
		}
		if tt.record >= 0 && len(record) != tt.record {
			t.Errorf("%s: consumed %d bytes, want %d", tt.name, len(record), tt.record)
		}
		if !bytes.Equal(append(record, rest...), tt.in) {
			t.Errorf("%s: bytes lost: %d + %d of %d", tt.name, len(record), len(rest), len(tt.in))
		}
	}
}

// FuzzReadClientHello: whatever an app sends first, reading it for an SNI
// never panics and loses no byte.
func FuzzReadClientHello(f *testing.F) {
	f.Add(clientHello(f, "api"))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		record, _ := readClientHello(br)
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(append(record, rest...), in) {
			t.Fatalf("bytes lost: %d + %d of %d", len(record), len(rest), len(in))
		}
	})
}
