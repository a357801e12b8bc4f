package relay

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/telemetry"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// statsServer stands in for sigil-server's side of Agent.ReportStats
// (the server's window store is another part's; this test checks what the
// agent sends it): it hands every report to got, or fails while down.
type statsServer struct {
	agentv1.UnimplementedAgentServer
	got  chan *agentv1.StatsReport
	down atomic.Bool
}

func (s *statsServer) ReportStats(_ context.Context, rep *agentv1.StatsReport) (*agentv1.ReportStatsResponse, error) {
	if s.down.Load() {
		return nil, status.Error(codes.Unavailable, "server away")
	}
	s.got <- rep
	return &agentv1.ReportStatsResponse{}, nil
}

// startStatsServer serves srv on loopback and returns a client of it.
func startStatsServer(t *testing.T, srv *statsServer) agentv1.AgentClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	agentv1.RegisterAgentServer(g, srv)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentClient(conn)
}

const (
	webID = "spiffe://example.org/ns/default/sa/web"
	apiID = "spiffe://example.org/ns/default/sa/api"
)

// sidecarReport is what one sidecar sends for n requests of key k, all in
// bucket b, failed of them failing.
func sidecarReport(k telemetry.Key, b uint32, n, failed uint64) *agentv1.StatsReport {
	return &agentv1.StatsReport{Series: []*agentv1.StatsSeries{{Key: k.Proto(), Requests: n, Failures: failed, BucketIndex: []uint32{b}, BucketCount: []uint64{n}}}}
}

// TestAgentStatsMergeSidecarsAndReportOncePerInterval: the reports of a
// node's sidecars are summed by key (counts and histograms) and reach the
// server in one ReportStats call per interval, listing the sidecars.
func TestAgentStatsMergeSidecarsAndReportOncePerInterval(t *testing.T) {
	r := New(nil, nil, slog.New(slog.DiscardHandler))
	web := &agentv1.Proxy{Id: "p1", SpiffeId: webID, Service: "web"}
	api := &agentv1.Proxy{Id: "p2", SpiffeId: apiID, Service: "api"}
	r.proxies[web.Id], r.proxies[api.Id] = web, api
	out := telemetry.Key{Reporter: "source", SourcePrincipal: webID, DestinationPrincipal: apiID, DestinationNamespace: "default", DestinationService: "api", DestinationSubset: "v1", Protocol: "http"}
	in := telemetry.Key{Reporter: "destination", SourcePrincipal: webID, DestinationPrincipal: apiID, DestinationNamespace: "default", DestinationService: "api", Protocol: "http"}
	r.addStats(web, sidecarReport(out, 10, 30, 3))
	r.addStats(web, sidecarReport(out, 12, 20, 0)) // a second interval of web's, same agent interval
	r.addStats(api, sidecarReport(in, 8, 50, 3))

	srv := &statsServer{got: make(chan *agentv1.StatsReport, 4)}
	client := startStatsServer(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := make(chan time.Time)
	done := make(chan struct{})
	results := make(chan error, 2)
	go func() {
		defer close(done)
		r.ReportStats(ctx, tick, time.Second, func(ctx context.Context, rep *agentv1.StatsReport) error {
			_, err := client.ReportStats(ctx, rep)
			results <- err
			return err
		})
	}()
	tick <- time.Now()
	var rep *agentv1.StatsReport
	select {
	case rep = <-srv.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no report reached the server")
	}
	if len(rep.Proxies) != 2 || len(rep.Series) != 2 {
		t.Fatalf("report of %d proxies and %d series, want 2 and 2: %v", len(rep.Proxies), len(rep.Series), rep)
	}
	byKey := map[telemetry.Key]*agentv1.StatsSeries{}
	for _, s := range rep.Series {
		byKey[telemetry.KeyOf(s.Key)] = s
	}
	if s := byKey[out]; s == nil || s.Requests != 50 || s.Failures != 3 || len(s.BucketIndex) != 2 {
		t.Errorf("outbound series %v, want 50 requests, 3 failures, buckets 10 and 12", s)
	}
	if s := byKey[in]; s == nil || s.Requests != 50 || s.Failures != 3 {
		t.Errorf("inbound series %v, want 50 requests, 3 failures", s)
	}
	// The next interval starts empty: only the proxies are listed.
	tick <- time.Now()
	select {
	case rep = <-srv.got:
		if len(rep.Series) != 0 {
			t.Errorf("second interval carried %d series, want none (deltas)", len(rep.Series))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no second report")
	}
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("ReportStats: %v", err)
		}
	}
	cancel()
	<-done
	if c := r.StatsCounts(); c.Sent != 2 || c.Dropped != 0 || c.RequestsSent != 100 {
		t.Errorf("counts %+v, want 2 intervals and 100 requests sent", c)
	}
}

// TestAgentStatsDropIntervalsWhileTheServerIsDown: an interval the server
// does not take is counted and dropped, not kept for later: the next
// report carries only its own interval.
func TestAgentStatsDropIntervalsWhileTheServerIsDown(t *testing.T) {
	r := New(nil, nil, slog.New(slog.DiscardHandler))
	web := &agentv1.Proxy{Id: "p1", SpiffeId: webID, Service: "web"}
	r.proxies[web.Id] = web
	k := telemetry.Key{Reporter: "source", SourcePrincipal: webID, DestinationNamespace: "default", DestinationService: "api", Protocol: "http"}
	srv := &statsServer{got: make(chan *agentv1.StatsReport, 4)}
	srv.down.Store(true)
	client := startStatsServer(t, srv)
	results := make(chan error, 1)
	send := func(ctx context.Context, rep *agentv1.StatsReport) error {
		_, err := client.ReportStats(ctx, rep)
		results <- err
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := make(chan time.Time)
	done := make(chan struct{})
	go func() { defer close(done); r.ReportStats(ctx, tick, time.Second, send) }()
	r.addStats(web, sidecarReport(k, 5, 7, 0))
	tick <- time.Now() // server down: dropped
	if err := <-results; err == nil {
		t.Fatal("report taken by a server that is down")
	}
	srv.down.Store(false)
	r.addStats(web, sidecarReport(k, 5, 2, 0))
	tick <- time.Now()
	if err := <-results; err != nil {
		t.Fatalf("report after the outage: %v", err)
	}
	if c := r.StatsCounts(); c.Dropped != 1 || c.Sent != 1 || c.RequestsDropped != 7 || c.RequestsSent != 2 {
		t.Errorf("counts %+v, want 1 interval (7 requests) dropped, 1 (2 requests) sent", c)
	}
	select {
	case rep := <-srv.got:
		if len(rep.Series) != 1 || rep.Series[0].Requests != 2 {
			t.Errorf("report after the outage %v, want only its own 2 requests", rep.Series)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report after the server came back")
	}
	cancel()
	<-done
}

// TestAgentStatsRefuseAnotherIdentitysSide: a sidecar reports only its own
// side of a request; series and denials naming another identity on that
// side are refused and counted.
func TestAgentStatsRefuseAnotherIdentitysSide(t *testing.T) {
	r := New(nil, nil, slog.New(slog.DiscardHandler))
	web := &agentv1.Proxy{Id: "p1", SpiffeId: webID, Service: "web"}
	forged := []telemetry.Key{
		{Reporter: "source", SourcePrincipal: apiID, DestinationService: "db"},            // claims api called
		{Reporter: "destination", DestinationPrincipal: apiID, DestinationService: "api"}, // claims api was called
		{Reporter: "proxy", SourcePrincipal: webID, DestinationService: "db"},             // no such reporter
	}
	for _, k := range forged {
		r.addStats(web, sidecarReport(k, 1, 1, 0))
	}
	r.addStats(web, &agentv1.StatsReport{Denials: []*agentv1.StatsDenial{{DestinationPrincipal: apiID, Path: "/x"}}})
	r.addStats(web, sidecarReport(telemetry.Key{Reporter: "source", SourcePrincipal: webID, DestinationService: "db"}, 1, 1, 0))
	rep := r.TakeStats(time.Now(), time.Second)
	if len(rep.Series) != 1 || len(rep.Denials) != 0 {
		t.Errorf("kept %d series and %d denials, want only web's own series", len(rep.Series), len(rep.Denials))
	}
	if c := r.StatsCounts(); c.Refused != uint64(len(forged))+1 {
		t.Errorf("refused %d, want %d", c.Refused, len(forged)+1)
	}
}
