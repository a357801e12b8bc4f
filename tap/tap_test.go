package tap

import (
	"strings"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
)

// clock is a settable clock for the set's rate and time to live.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func start(id string, rate, max uint32) *agentv1.TapControl {
	return &agentv1.TapControl{TapId: id, Match: &agentv1.TapMatch{Namespace: "default", Service: "api", PathPrefix: "/v1"},
		Rate: rate, MaxEvents: max, TtlMillis: TTL.Milliseconds()}
}

func TestTapControlBounds(t *testing.T) {
	ok := start("t1", 10, 100)
	for _, tc := range []struct {
		name   string
		change func(c *agentv1.TapControl)
		want   string
	}{
		{"valid", func(*agentv1.TapControl) {}, ""},
		{"stop needs only an id", func(c *agentv1.TapControl) { c.Stop, c.Match, c.Rate = true, nil, 0 }, ""},
		{"no id", func(c *agentv1.TapControl) { c.TapId = "" }, "tap_id"},
		{"long id", func(c *agentv1.TapControl) { c.TapId = strings.Repeat("a", MaxIDLength+1) }, "tap_id"},
		{"bad service", func(c *agentv1.TapControl) { c.Match.Service = "API!" }, "service"},
		{"bad namespace", func(c *agentv1.TapControl) { c.Match.Namespace = "a b" }, "namespace"},
		{"relative prefix", func(c *agentv1.TapControl) { c.Match.PathPrefix = "v1" }, "path prefix"},
		{"zero rate", func(c *agentv1.TapControl) { c.Rate = 0 }, "rate"},
		{"rate above bound", func(c *agentv1.TapControl) { c.Rate = MaxRate + 1 }, "rate"},
		{"zero events", func(c *agentv1.TapControl) { c.MaxEvents = 0 }, "max events"},
		{"events above bound", func(c *agentv1.TapControl) { c.MaxEvents = MaxEvents + 1 }, "max events"},
		{"no ttl", func(c *agentv1.TapControl) { c.TtlMillis = 0 }, "ttl"},
		{"ttl above bound", func(c *agentv1.TapControl) { c.TtlMillis = (MaxTTL + time.Second).Milliseconds() }, "ttl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &agentv1.TapControl{TapId: ok.TapId, Match: &agentv1.TapMatch{Namespace: "default", Service: "api", PathPrefix: "/v1"}, Rate: ok.Rate, MaxEvents: ok.MaxEvents, TtlMillis: ok.TtlMillis}
			tc.change(c)
			err := CheckControl(c)
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// A tap lets through at most its rate per second and its number of
// events, at every hop that holds it.
func TestTapSetRateAndMax(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := NewSet(c.now)
	if started, err := s.Apply(start("t1", 5, 8)); err != nil || !started {
		t.Fatalf("Apply = %v, %v", started, err)
	}
	count := func() int {
		n := 0
		for range 100 {
			n += len(s.Sample("GET", "/v1/items"))
		}
		return n
	}
	if n := count(); n != 5 {
		t.Fatalf("first second let %d through, want the rate, 5", n)
	}
	c.t = c.t.Add(time.Second)
	if n := count(); n != 3 {
		t.Fatalf("second second let %d through, want the 3 left of 8", n)
	}
	c.t = c.t.Add(time.Second)
	if n := count(); n != 0 {
		t.Fatalf("after max, %d let through", n)
	}
}

func TestTapSetMatches(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := NewSet(c.now)
	ctl := start("t1", 100, 100)
	ctl.Match.Method = "POST"
	if _, err := s.Apply(ctl); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/v1/x", 1},
		{"GET", "/v1/x", 0},
		{"POST", "/v2/x", 0},
	} {
		if got := len(s.Sample(tc.method, tc.path)); got != tc.want {
			t.Errorf("Sample(%s %s) = %d taps, want %d", tc.method, tc.path, got, tc.want)
		}
	}
}

// A tap not renewed within its time to live lapses at every hop: its
// owner may have vanished (fail safe). A renewal keeps it.
func TestTapSetLapsesUnlessRenewed(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := NewSet(c.now)
	if _, err := s.Apply(start("t1", 10, 100)); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(TTL - time.Second)
	if started, err := s.Apply(start("t1", 10, 100)); err != nil || started {
		t.Fatalf("renew = %v, %v; want a renewal, not a start", started, err)
	}
	c.t = c.t.Add(TTL - time.Second)
	if !s.Holds("t1") || !s.Active() {
		t.Fatal("renewed tap lapsed early")
	}
	c.t = c.t.Add(time.Second)
	// Another call notices first; Expire still reports it, once.
	if s.Holds("t1") {
		t.Fatal("lapsed tap held")
	}
	if got := s.Expire(); len(got) != 1 || got[0] != "t1" {
		t.Fatalf("Expire = %v, want [t1]", got)
	}
	if got := s.Expire(); len(got) != 0 {
		t.Fatalf("second Expire = %v, want nothing", got)
	}
	if s.Active() || s.Admit("t1") || len(s.Sample("GET", "/v1")) != 0 {
		t.Fatal("lapsed tap still samples")
	}
}

func TestTapSetStopAndBound(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	s := NewSet(c.now)
	for i := range MaxTaps {
		if _, err := s.Apply(start("t"+string(rune('a'+i)), 1, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Apply(start("one-too-many", 1, 1)); err != ErrTooMany {
		t.Fatalf("tap %d: err %v, want ErrTooMany", MaxTaps+1, err)
	}
	if _, err := s.Apply(&agentv1.TapControl{TapId: "ta", Stop: true}); err != nil {
		t.Fatal(err)
	}
	if s.Holds("ta") {
		t.Fatal("stopped tap still held")
	}
	if len(s.Controls()) != MaxTaps-1 {
		t.Fatalf("%d controls, want %d", len(s.Controls()), MaxTaps-1)
	}
	s.Clear()
	if s.Active() {
		t.Fatal("cleared set active")
	}
}

// Clean bounds every field and drops a query smuggled into the path.
func TestTapEventClean(t *testing.T) {
	ev := Clean(&agentv1.TapEvent{
		Path: "/login?token=secret-xyz", Method: "GET\r\nAuthorization: x", Direction: "sideways",
		Authority: strings.Repeat("h", 300), Status: 1200, LatencyMicros: -5, Protocol: "http",
	})
	if strings.Contains(ev.Path, "secret") || ev.Path != "/login" {
		t.Errorf("path %q kept its query", ev.Path)
	}
	if ev.Method != "" || ev.Direction != "" || len(ev.Authority) != maxAuthority || ev.Status != 0 || ev.LatencyMicros != 0 || ev.Protocol != "http" {
		t.Errorf("not cleaned: %+v", ev)
	}
}

func TestTapBoundsMatchTheAPI(t *testing.T) {
	for _, b := range []struct {
		name      string
		tap, wire int
	}{
		{"default max", DefaultMaxEvents, adminv1.TapDefaultMax},
		{"max events", MaxEvents, adminv1.TapMaxEvents},
		{"default rate", DefaultRate, adminv1.TapDefaultRate},
		{"max rate", MaxRate, adminv1.TapMaxRate},
	} {
		if b.tap != b.wire {
			t.Errorf("%s: tap has %d, api/admin/v1 %d", b.name, b.tap, b.wire)
		}
	}
}
