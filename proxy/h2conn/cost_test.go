package h2conn

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
)

// TestPerStreamAllocationsBounded holds the allocations of one request
// and its response, client and server together, under a ceiling: each
// stream's cost (its structs, header maps, HPACK fields, body buffers)
// is paid on every request between sidecars, so a change that adds to it
// shows here before it shows in BenchmarkH2Conn (bench/). The ceilings
// leave a little room above what the code makes today (31, 32 and 39;
// 81, 89 and 102 before the per-stream work was cut), counted with
// testing.AllocsPerRun over sequential requests so no stream contends.
func TestPerStreamAllocationsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations over many round trips")
	}
	payload := strings.Repeat("x", 1024)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		if r.URL.Query().Has("trailer") {
			w.Header().Set("Trailer", "Grpc-Status")
		}
		io.WriteString(w, payload)
		if r.URL.Query().Has("trailer") {
			w.Header().Set("Grpc-Status", "0")
		}
	})
	addr := serve(t, &Server{Handler: handler}, nil)
	cl := client(t, addr, nil, Limits{})
	cases := []struct {
		name, method, path, body string
		// most is the ceiling on allocations per round trip, the
		// request's own construction (http.NewRequest) included.
		most float64
	}{
		{"GET, 1 KiB answer", "GET", "/echo?size=1024", "", 36},
		{"POST 1 KiB, 1 KiB answer", "POST", "/echo", payload, 38},
		{"GET, answer with trailers", "GET", "/echo?trailer=1", "", 45},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			roundTrip := func() {
				req := newReq(t, tc.method, tc.path, tc.body)
				resp, err := cl.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != 1024 {
					t.Fatalf("status %d, body of %d bytes", resp.StatusCode, n)
				}
			}
			roundTrip() // the connection opens
			got := testing.AllocsPerRun(200, roundTrip)
			t.Logf("%.1f allocations per round trip", got)
			if got > tc.most {
				t.Errorf("%.1f allocations per round trip, want at most %.0f", got, tc.most)
			}
		})
	}
}

// TestLargeBodyBytesAllocatedBounded holds the bytes allocated for a
// body larger than the pooled 16 KiB chunk under a ceiling: such a body
// is written from the handler's slice (lent to the writer, not copied
// into a buffer grown past the chunk) and received into pooled chunks
// (not one slice grown by append), so a 1 MiB answer costs the stream's
// own allocations, not a megabyte or more of arrays for the collector,
// each filled by a memmove (bench/README.md "Sidecar-to-sidecar
// transport"). The handler writes 32 KiB at a time, as the proxy's
// response copy does.
func TestLargeBodyBytesAllocatedBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("counts allocations over many round trips")
	}
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops buffers put back")
	}
	const size, write = 1 << 20, 32 << 10
	chunk := []byte(strings.Repeat("y", write))
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range size / write {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	addr := serve(t, &Server{Handler: handler}, nil)
	cl := client(t, addr, nil, Limits{})
	buf := make([]byte, write)
	roundTrip := func() {
		resp, err := cl.RoundTrip(newReq(t, "GET", "/big", ""))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, buf)
		resp.Body.Close()
		if n != size {
			t.Fatalf("body of %d bytes, want %d", n, size)
		}
	}
	roundTrip() // the connection opens
	const rounds = 40
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	perTrip := (after.TotalAlloc - before.TotalAlloc) / rounds
	t.Logf("%d bytes allocated per 1 MiB round trip", perTrip)
	// A sync.Pool is emptied at each collection, so some chunks are made
	// anew; the per-stream structs take ~5 KB.
	const most = 64 << 10
	if perTrip > most {
		t.Errorf("%d bytes allocated per 1 MiB round trip, want at most %d", perTrip, most)
	}
}
