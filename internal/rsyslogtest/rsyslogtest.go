// Package rsyslogtest runs Debian's rsyslogd as a syslog receiver for
// tests: imtcp on two loopback ports chosen by the kernel, one plain and
// one with TLS (the gtls driver, a certificate for 127.0.0.1 from a CA
// made for the run), writing every message it receives to one file with
// rsyslog's RSYSLOG_SyslogProtocol23Format template, which keeps the RFC
// 5424 fields. It is for tests only; nothing else imports it.
package rsyslogtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Receiver is a running rsyslogd.
type Receiver struct {
	// TCPAddr and TLSAddr are the plain and the TLS listeners
	// (127.0.0.1:PORT).
	TCPAddr, TLSAddr string
	// CAFile is the PEM file of the CA the TLS listener's certificate
	// chains to (for 127.0.0.1 and localhost).
	CAFile string
	// Out is the file rsyslogd writes, one message a line.
	Out string

	exited chan struct{}
}

// Start starts rsyslogd for t and stops it when t ends. Without rsyslogd
// the test is skipped, except under CI (CI set), where .ci/run installs
// Debian's rsyslog and rsyslog-gnutls and a missing one is a failure.
func Start(t testing.TB) *Receiver {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("rsyslogd not installed; .ci/run installs Debian's rsyslog and rsyslog-gnutls")
		}
		t.Skip("rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls; .ci/run does)")
	}
	dir := t.TempDir()
	ca, cert, key := writeCA(t, dir)
	r := &Receiver{CAFile: ca, Out: filepath.Join(dir, "out.log"), exited: make(chan struct{})}
	conf := fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" port="0" address="127.0.0.1" listenPortFileName=%[2]q ruleset="out")
input(type="imtcp" port="0" address="127.0.0.1" listenPortFileName=%[3]q ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.caFile=%[4]q streamDriver.certFile=%[5]q streamDriver.keyFile=%[6]q)
ruleset(name="out") { action(type="omfile" file=%[7]q template="RSYSLOG_SyslogProtocol23Format") }
`, dir, filepath.Join(dir, "tcp.port"), filepath.Join(dir, "tls.port"), ca, cert, key, r.Out)
	confFile := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-n", "-f", confFile, "-i", filepath.Join(dir, "rsyslogd.pid"))
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-r.exited
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", logs.String())
		}
	})
	r.TCPAddr = "127.0.0.1:" + r.waitFile(t, filepath.Join(dir, "tcp.port"))
	r.TLSAddr = "127.0.0.1:" + r.waitFile(t, filepath.Join(dir, "tls.port"))
	return r
}

// lockedBuffer collects rsyslogd's output from its copying goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// poll calls try every 20 ms until it reports done, failing t after d or
// when rsyslogd exits. rsyslogd signals nothing but its files, so they
// are watched.
func (r *Receiver) poll(t testing.TB, d time.Duration, what string, try func() bool) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !try() {
		select {
		case <-tick.C:
		case <-r.exited:
			if try() {
				return
			}
			t.Fatalf("rsyslogd exited before %s", what)
		case <-deadline:
			t.Fatalf("%s: not within %s", what, d)
		}
	}
}

// waitFile returns the content of the port file rsyslogd writes once it
// listens.
func (r *Receiver) waitFile(t testing.TB, path string) string {
	t.Helper()
	var port string
	r.poll(t, 10*time.Second, "writing "+path, func() bool {
		b, err := os.ReadFile(path)
		port = strings.TrimSpace(string(b))
		return err == nil && port != ""
	})
	return port
}

// Lines waits until rsyslogd has written at least n messages and returns
// every line of Out.
func (r *Receiver) Lines(t testing.TB, n int) []string {
	t.Helper()
	var lines []string
	r.poll(t, 15*time.Second, fmt.Sprintf("%d lines in %s", n, r.Out), func() bool {
		lines = lines[:0]
		f, err := os.Open(r.Out)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		return len(lines) >= n
	})
	return lines
}

// writeCA writes a CA and a server certificate for 127.0.0.1 and
// localhost into dir (ECDSA P-256, valid for an hour).
func writeCA(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigil test syslog CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{caFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}
