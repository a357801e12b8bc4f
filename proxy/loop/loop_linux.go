//go:build linux

package loop

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readSize is the free room made before each read(2), in bytes: a whole
// TLS record (16 KiB plus overhead) fits.
const readSize = 17 << 10

// maxQueued bounds what waits unsent for one connection, or unrelayed
// from it, before the loop stops reading its peer (or it), in bytes.
const maxQueued = 1 << 20

// Loop relays the connections handed to it (Take) on one goroutine.
type Loop struct {
	cfg  Config
	tick atomic.Bool // set by ticks: sweep for connections past their deadline
	// idleGone is set by CloseIdle: close every idle pooled connection.
	idleGone atomic.Bool
	epfd     int
	wakefd   int // an eventfd in the epoll set: Take and dials write it
	rc       syscall.RawConn
	epf      *os.File
	events   []unix.EpollEvent
	conns    []*side // by fd
	dirty    []*side
	live     int          // pairs not yet closed (the loop's goroutine's)
	nlive    atomic.Int64 // live as of the last batch, for Conns
	now      time.Time    // the clock read once per batch of events
	mu       sync.Mutex
	pending  []*side // sides to adopt: new callers, dialed upstreams
	// decisions are Verdict.Decide's results for the loop to go on
	// with (under mu).
	decisions []*decision
	draining  bool          // under mu: Shutdown or Close began
	closing   bool          // under mu: Close began
	wakeGone  bool          // under mu: wakefd is closed (its number may be anything's now)
	drained   chan struct{} // closed once draining and no pair is left
	npending  atomic.Int32
	stopped   chan struct{}   // closed when run returns, every connection closed
	ctx       context.Context // dials' parent: canceled when the loop stops
	cancel    context.CancelFunc
	// idle is the pool: idle upstream connections by key, the most
	// recently used last; spares, pool sides given back, for reuse.
	idle   map[string][]*side
	spares []*side
	// drainSeen: the loop's goroutine saw draining (no connection is
	// pooled from then on).
	drainSeen bool
	// ticker drives the sweep: every tickBase, or every fastTick while
	// an exchange with a Verdict.Timeout is in flight (fast).
	ticker   *time.Ticker
	tickBase time.Duration
	fast     bool
}

// fastTick is the sweep's period while an exchange with a
// Verdict.Timeout is in flight: request timeouts are not known when the
// loop starts, and one ticker serves them all (no timer per request), at
// the price of firing up to this late and of sweeping every connection
// this often while such exchanges last.
const fastTick = 10 * time.Millisecond

// New starts a Loop for cfg.
func New(cfg Config) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("loop: epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("loop: epoll fd nonblocking: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("loop: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, fmt.Errorf("loop: epoll_ctl add eventfd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll") // registered with Go's poller: nonblocking
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		unix.Close(wakefd)
		return nil, fmt.Errorf("loop: epoll fd: %w", err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	cfg.UpstreamIdleTimeout = cmp.Or(cfg.UpstreamIdleTimeout, 90*time.Second)
	if len(cfg.BadGateway) == 0 {
		cfg.BadGateway = badGateway
	}
	if cfg.MinBodyRate > 0 && cfg.BodyRateWindow <= 0 {
		cfg.MinBodyRate = 0
	}
	l := &Loop{cfg: cfg, epfd: epfd, wakefd: wakefd, rc: rc, epf: f, events: make([]unix.EpollEvent, 256),
		drained: make(chan struct{}), stopped: make(chan struct{}), idle: make(map[string][]*side), spares: make([]*side, 0, 64)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	// The sweep runs a few times per shortest bound: a quarter of a
	// timeout, a fifth of the body rate's window (as proxy's heartbeat).
	tick := time.Duration(0)
	for _, d := range []time.Duration{cfg.HeaderTimeout / 4, cfg.IdleTimeout / 4, cfg.ReadIdleTimeout / 4, time.Duration(min(cfg.MinBodyRate, 1)) * cfg.BodyRateWindow / 5, cfg.UpstreamIdleTimeout / 4} {
		if d > 0 && (tick == 0 || d < tick) {
			tick = d
		}
	}
	l.tickBase = min(max(tick, fastTick), time.Second)
	l.ticker = time.NewTicker(l.tickBase)
	go l.run()
	go l.ticks()
	return l, nil
}

// Take hands c, accepted and (for TLS) handshaken, to the loop, which
// closes it when done; Value is what the Handler finds in Caller.Value.
// c's descriptor moves to the loop (it is duplicated, and the socket
// closed in c's net.Conn, whose Close is still called when the loop
// closes the connection, so a listener's wrapper counting open
// connections sees it open until then). On an error c is closed.
func (l *Loop) Take(c *Conn, value any) error {
	down := &side{isDown: true, x: &exchange{answerMark: -1}, owner: c.raw, caller: Caller{Value: value}, secure: c.TLS != nil}
	up := &side{peer: down, x: down.x, fd: -1, secure: l.cfg.UpstreamTLS != nil}
	down.peer = up
	if a := c.raw.RemoteAddr(); a != nil {
		down.caller.RemoteAddr = a.String()
	}
	if c.TLS != nil {
		cs := c.TLS.ConnectionState()
		down.caller.tls = &cs
		if len(cs.PeerCertificates) > 0 {
			down.notAfter = cs.PeerCertificates[0].NotAfter
		}
		down.tc, down.bc = c.TLS, c.bc
	}
	fd, err := takeFD(c.raw)
	if err != nil {
		c.raw.Close()
		return err
	}
	down.fd = fd
	down.in = c.buffered
	if down.bc != nil {
		down.bc.nc, down.bc.out = nil, &down.out // from now on the loop's buffers
	}
	if err := l.register(fd); err != nil {
		unix.Close(fd)
		c.raw.Close()
		return err
	}
	if !l.queue(down) {
		unix.Close(fd)
		c.raw.Close()
		return ErrClosed
	}
	return nil
}

// takeFD moves c's socket out of Go's poller: it duplicates the
// descriptor of the TCP connection under c's wrappers (the socket stays
// nonblocking) and closes that connection.
func takeFD(c net.Conn) (int, error) {
	for {
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		if inner := w.NetConn(); inner != nil {
			c = inner
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("loop: %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("loop: %w", err)
	}
	fd := -1
	if cerr := rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); cerr != nil {
		return -1, fmt.Errorf("loop: %w", cerr)
	}
	if err != nil {
		return -1, fmt.Errorf("loop: dup: %w", err)
	}
	c.Close()
	return fd, nil
}

// register adds fd to the epoll set. The loop adopts the side queued
// for it afterwards (and changes its events once it has); an event that
// comes before the adoption is reported again, level-triggered. After
// Close began it fails: the epoll descriptor may be gone.
func (l *Loop) register(fd int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("loop: epoll_ctl add: %w", err)
	}
	return nil
}

// queue passes s to the loop's goroutine and wakes it (even if s's
// socket never becomes readable: a handshake may have left application
// data inside crypto/tls). It reports false once the loop is shutting
// down and s is a new caller, or closing.
func (l *Loop) queue(s *side) bool {
	l.mu.Lock()
	if l.draining && s.isDown || l.closing {
		l.mu.Unlock()
		return false
	}
	l.pending = append(l.pending, s)
	l.npending.Add(1)
	l.mu.Unlock()
	l.wake()
	return true
}

func (l *Loop) wake() {
	l.mu.Lock()
	if !l.wakeGone {
		unix.Write(l.wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) // EAGAIN: already awake
	}
	l.mu.Unlock()
}

// CloseIdle closes every idle connection of the loop's pool, soon (on
// the loop's goroutine): what an upstream's connections are for has
// changed (a cap on them, say, that they would hold slots of), and the
// next requests dial anew. Safe from any goroutine.
func (l *Loop) CloseIdle() {
	l.idleGone.Store(true)
	l.wake()
}

// Conns is how many callers' connections the loop serves, as of its
// last batch of events.
func (l *Loop) Conns() int { return int(l.nlive.Load()) }

// Shutdown stops the loop gracefully: it takes no new connection, ends
// each connection once its exchange in flight (if any) is answered, and
// returns when none is left; if ctx ends first, it closes the rest and
// returns ctx's error.
func (l *Loop) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	l.draining = true
	l.mu.Unlock()
	l.npending.Add(1) // have the loop look at the queue, and so at draining
	l.wake()
	select {
	case <-l.drained:
		return l.Close()
	case <-l.stopped: // Close, before or during
		return nil
	case <-ctx.Done():
		l.Close()
		return ctx.Err()
	}
}

// Close ends every connection at once, telling their exchanges
// ErrClosed, and stops the loop; it returns once the loop has stopped.
func (l *Loop) Close() error {
	l.mu.Lock()
	l.draining, l.closing = true, true
	l.mu.Unlock()
	l.npending.Add(1)
	l.wake()
	<-l.stopped
	return nil
}
