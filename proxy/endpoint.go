package proxy

import (
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// endpoint is one sidecar of a service, with what the balancer and
// outlier detection know of it. Endpoints outlive configuration changes:
// they are kept by address and identity, so ejections, latency estimates
// and pooled connections carry over.
type endpoint struct {
	addr   string
	id     spiffeid.ID // the identity its agent attested; zero: any of the trust domain
	labels map[string]string

	active atomic.Int64 // requests in flight

	mu           sync.Mutex
	ewma         float64 // peak EWMA of latency, seconds
	ewmaAt       time.Time
	consec5xx    int
	consecGW     int
	ejectedUntil time.Time
	ejections    int

	transports *transports
}

// transports are an endpoint's pooled connections. maxRequestsPerConnection
// is honoured by starting a new generation (new pool, old one drained)
// every N requests: between sidecars one HTTP/2 connection carries them.
type transports struct {
	mu       sync.Mutex
	h2, h1   *http.Transport
	requests int
	make     func(alpn string) *http.Transport
}

func (t *transports) get(upgrade bool, perConn int) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if upgrade {
		if t.h1 == nil {
			t.h1 = t.make(alpnH1)
		}
		return t.h1
	}
	if t.h2 == nil {
		t.h2 = t.make(alpnH2)
	}
	t.requests++
	if perConn > 0 && t.requests > perConn {
		old := t.h2
		t.h2, t.requests = t.make(alpnH2), 1
		// In-flight requests finish on the old connection; idle ones close.
		time.AfterFunc(time.Minute, old.CloseIdleConnections)
		old.CloseIdleConnections()
	}
	return t.h2
}

func (t *transports) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range []*http.Transport{t.h1, t.h2} {
		if tr != nil {
			tr.CloseIdleConnections()
		}
	}
}

// ewmaTau is how fast old latency observations fade.
const ewmaTau = 10 * time.Second

// observe records a request's latency (peak EWMA: a slower sample is taken
// at once, faster ones decay in).
func (e *endpoint) observe(d time.Duration, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := d.Seconds()
	if s > e.ewma || e.ewmaAt.IsZero() {
		e.ewma = s
	} else {
		w := math.Exp(-now.Sub(e.ewmaAt).Seconds() / ewmaTau.Seconds())
		e.ewma = e.ewma*w + s*(1-w)
	}
	e.ewmaAt = now
}

// cost is the peak-EWMA balancer's score: expected latency times load.
func (e *endpoint) cost() float64 {
	e.mu.Lock()
	l := e.ewma
	e.mu.Unlock()
	if l == 0 {
		l = 0.001 // unmeasured endpoints look fast, so they get tried
	}
	return l * float64(e.active.Load()+1)
}

func (e *endpoint) ejected(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return now.Before(e.ejectedUntil)
}
