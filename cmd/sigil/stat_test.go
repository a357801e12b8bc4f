package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/spf13/cobra"
)

// fakeAdmin serves canned answers to GET /v1/stats and /v1/edges on a
// Unix socket and records the queries it got.
func fakeAdmin(t *testing.T, stats adminv1.StatResponse, edges adminv1.EdgesResponse) (clientFunc, *[]string) {
	t.Helper()
	sock := adminv1.AdminSocket(t.TempDir())
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.String())
		_ = json.NewEncoder(w).Encode(stats)
	})
	mux.HandleFunc("GET /v1/edges", func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.String())
		_ = json.NewEncoder(w).Encode(edges)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return func() (*adminv1.AdminClient, error) { return adminv1.NewAdminClient(sock), nil }, &got
}

func ptr(f float64) *float64 { return &f }

// `sigil stat` and `sigil edges` print the server's figures as tables
// (wide adds the counts), or as JSON, and send the query the flags say.
func TestStatOutput(t *testing.T) {
	g := adminv1.Golden{Requests: 600, Failures: 60, SuccessRate: ptr(0.9), RPS: 10, P50: ptr(1.234), P95: ptr(45.67), P99: ptr(123.4), TCPConnections: 3, BytesSent: 100, BytesReceived: 200}
	stats := adminv1.StatResponse{Window: time.Minute, Resolution: 10 * time.Second, Rows: []adminv1.StatRow{
		{Kind: "subset", Namespace: "default", Name: "reviews", Subset: "v1", Meshed: 2, Golden: g},
		{Kind: "subset", Namespace: "default", Name: "reviews", Subset: "", Meshed: 2},
	}}
	edges := adminv1.EdgesResponse{Window: time.Minute, Edges: []adminv1.Edge{{Source: "spiffe://example.org/ns/default/sa/productpage", DestinationNamespace: "default", DestinationService: "reviews", Destination: "spiffe://example.org/ns/default/sa/reviews", Golden: g}}}
	for _, tc := range []struct {
		name      string
		args      []string
		want      []string
		wantQuery string
	}{
		{"subset table", []string{"stat", "subset", "reviews", "-n", "default"}, []string{
			"NAME     SUBSET  MESHED  SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN",
			"reviews  v1      2       90.00%   10.0rps  1.23ms       45.7ms       123ms        3",
			"reviews  -       2       -        0.0rps   -            -            -            0",
		}, "/v1/stats?kind=subset&name=reviews&namespace=default&window=1m0s"},
		{"wide, all namespaces", []string{"stat", "svc", "-o", "wide", "--window", "5m"}, []string{
			"NAMESPACE  NAME     SUBSET  MESHED  SUCCESS  RPS      LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN  REQUESTS  FAILURES  BYTES_SENT  BYTES_RECEIVED",
			"default    reviews  v1      2       90.00%   10.0rps  1.23ms       45.7ms       123ms        3         600       60        100         200",
		}, "/v1/stats?kind=service&window=5m0s"},
		{"json", []string{"stat", "-o", "json"}, []string{`"success_rate": 0.9`, `"p99_ms": 123.4`}, "/v1/stats?kind=service&window=1m0s"},
		{"edges", []string{"edges", "-n", "default"}, []string{
			"SRC                                             DST_SERVICE      DST                                         SUCCESS  RPS      LATENCY_P99",
			"spiffe://example.org/ns/default/sa/productpage  reviews.default  spiffe://example.org/ns/default/sa/reviews  90.00%   10.0rps  123ms",
		}, "/v1/edges?namespace=default&window=1m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, got := fakeAdmin(t, stats, edges)
			root := newRootForTest(client)
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs(tc.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if len(*got) != 1 || (*got)[0] != tc.wantQuery {
				t.Errorf("queries %v, want %s", *got, tc.wantQuery)
			}
		})
	}
}

// With nothing reported, the table says so instead of printing a bare
// header; JSON stays JSON.
func TestStatNoTraffic(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		stdout, stderr string
	}{
		{[]string{"stat"}, "", "No traffic reported in the last 1m0s.\n"},
		{[]string{"stat", "-o", "json"}, `"rows": []`, ""},
		{[]string{"stat", "--window", "20s"}, "", "Warning: 3 requests and connections of the window were counted in no series"},
	} {
		resp := adminv1.StatResponse{Window: time.Minute, Rows: []adminv1.StatRow{}}
		if tc.args[len(tc.args)-1] == "20s" {
			resp.Overflow = 3
		}
		client, _ := fakeAdmin(t, resp, adminv1.EdgesResponse{})
		root := newRootForTest(client)
		var out, errOut bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errOut)
		root.SetArgs(tc.args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.stdout) || !strings.HasPrefix(errOut.String(), tc.stderr) {
			t.Errorf("%v: stdout %q stderr %q, want %q and %q", tc.args, out.String(), errOut.String(), tc.stdout, tc.stderr)
		}
	}
}

// Bad input is refused before the server is asked, naming what was wrong.
func TestStatRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stat", "pods"}, `unknown kind "pods": want svc, service, subset, workload or route`},
		{[]string{"stat", "--window", "15s"}, "--window 15s: want a multiple of 10s"},
		{[]string{"stat", "--window", "-1m"}, "--window -1m0s"},
		{[]string{"stat", "--window", "soon"}, `invalid argument "soon" for "--window"`},
		{[]string{"stat", "-o", "yaml"}, `--output "yaml": want wide or json`},
		{[]string{"stat", "svc", "a", "b"}, "accepts at most 2 arg(s)"},
		{[]string{"edges", "-o", "wide"}, `--output "wide": want json`},
		{[]string{"edges", "reviews"}, "unknown command"},
	} {
		client, got := fakeAdmin(t, adminv1.StatResponse{}, adminv1.EdgesResponse{})
		root := newRootForTest(client)
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
		if len(*got) != 0 {
			t.Errorf("%v: the server was asked %v", tc.args, *got)
		}
	}
}

// newRootForTest is sigil's root with the commands under test.
func newRootForTest(client clientFunc) *cobra.Command {
	root := &cobra.Command{Use: "sigil", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newStat(client), newEdges(client))
	return root
}
