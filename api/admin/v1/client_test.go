package adminv1

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve answers every request on a Unix socket with status and body, as
// the server's admin socket would.
func serve(t *testing.T, status int, body string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "adminv1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := AdminSocket(dir)
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return sock
}

// TestClientErrors checks how the client reports each way a call fails:
// the server's JSON error as an *APIError carrying the status and the
// message unchanged (the CLI prints it), anything else with the package
// prefix, and no server as ErrServerNotRunning.
func TestClientErrors(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantAPI    *APIError
		wantPrefix string
	}{
		{"api error", http.StatusConflict, `{"error":"registry: already exists: an entry"}`, &APIError{Status: 409, Message: "registry: already exists: an entry"}, ""},
		{"error without JSON", http.StatusBadGateway, "upstream down", nil, "adminv1: 502 Bad Gateway"},
		{"ok with bad JSON", http.StatusOK, "[{", nil, "adminv1: decoding the response to GET /v1/entries"},
		{"ok", http.StatusOK, `[{"id":"e1","selectors":[{"Type":"unix","Value":"uid:1"}]}]`, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewAdminClient(serve(t, tt.status, tt.body))
			es, err := c.ListEntries(t.Context(), "")
			var apiErr *APIError
			switch {
			case tt.wantAPI != nil:
				if !errors.As(err, &apiErr) || *apiErr != *tt.wantAPI {
					t.Fatalf("error %#v, want %#v", err, tt.wantAPI)
				}
				if err.Error() != tt.wantAPI.Message {
					t.Errorf("message %q, want the server's %q unchanged", err.Error(), tt.wantAPI.Message)
				}
			case tt.wantPrefix != "":
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantPrefix) || errors.As(err, &apiErr) {
					t.Fatalf("error %v, want one starting %q", err, tt.wantPrefix)
				}
			default:
				if err != nil || len(es) != 1 || es[0].Selectors[0].String() != "unix:uid:1" {
					t.Fatalf("got %+v, %v", es, err)
				}
			}
		})
	}
	t.Run("no server", func(t *testing.T) {
		_, err := NewAdminClient(filepath.Join(t.TempDir(), "admin.sock")).ListEntries(t.Context(), "")
		if !errors.Is(err, ErrServerNotRunning) {
			t.Fatalf("error %v, want ErrServerNotRunning", err)
		}
	})
}

// TestClientTimeoutNamesSocket: a server that takes the connection and
// never answers (stopped, or starved of CPU) ends the call at the client's
// bound with an error naming the admin socket and the bound, never a hang.
func TestClientTimeoutNamesSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		// Accepts and holds the connection, reading nothing.
		if conn, err := lis.Accept(); err == nil {
			accepted <- conn
		}
	}()
	c := NewAdminClient(sock)
	c.http.Timeout = 200 * time.Millisecond
	errc := make(chan error, 1)
	go func() { _, err := c.Bundle(t.Context(), "pem"); errc <- err }()
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Bundle did not return within 10s of a 200ms bound")
	}
	select {
	case conn := <-accepted:
		conn.Close()
	default:
		t.Fatal("the client never connected")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want one wrapping context.DeadlineExceeded", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "adminv1: ") || !strings.Contains(msg, "admin socket "+sock) || !strings.Contains(msg, "within 200ms") {
		t.Fatalf("error %q, want the package prefix, the admin socket %s and the bound 200ms", msg, sock)
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"vs", "VirtualService", true},
		{"VirtualServices", "VirtualService", true},
		{"virtualservice", "VirtualService", true},
		{"VirtualService", "VirtualService", true},
		{"DR", "DestinationRule", true},
		{"destinationrules", "DestinationRule", true},
		{"Gateway", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got, ok := KindOf(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("KindOf(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
