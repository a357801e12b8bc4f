// Package leader elects one sigil-server replica to sign, with client-go's
// leader election on a coordination.k8s.io Lease (by default
// sigil-system/sigil-server), as kube-controller-manager and SPIRE's
// controller manager elect theirs. No consensus of Sigil's own: the API
// server's compare-and-swap on the Lease decides.
//
// A replica's identity in the Lease is its pod name and the address of its
// agent API, joined by Separator ("sigil-server-7d9f_10.0.3.7:8081"), so a
// follower can tell an agent where the leader is (Address).
//
// Timing follows client-go's terms (and kube-controller-manager's flag
// names and defaults): a leader that has not renewed the Lease for
// LeaseDuration (15 s) may be replaced; a leader that could not renew for
// RenewDeadline (10 s) steps down before that can happen; candidates retry
// every RetryPeriod (2 s). After a leader dies, another replica leads
// within LeaseDuration + RetryPeriod; after a clean stop at once, since the
// stopping leader releases the Lease.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// DefaultLease is the Lease's name, in the server's --k8s-namespace.
const DefaultLease = "sigil-server"

// Defaults of client-go's (and kube-controller-manager's
// --leader-elect-*) timing.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Separator joins a replica's pod name and agent API address in its
// identity; it cannot occur in a pod name (a DNS subdomain).
const Separator = "_"

// Identity is the Lease holder identity of the replica in pod that serves
// agents on addr (HOST:PORT).
func Identity(pod, addr string) string { return pod + Separator + addr }

// Address returns the agent API address in a holder identity made by
// Identity, and false for an identity of another form.
func Address(identity string) (string, bool) {
	_, addr, ok := strings.Cut(identity, Separator)
	return addr, ok && addr != ""
}

// Config configures an Elector.
type Config struct {
	// Leases reaches the Lease's API (clientset.CoordinationV1()).
	Leases coordinationv1client.LeasesGetter
	// Namespace and Name name the Lease (Name: DefaultLease when empty).
	Namespace, Name string
	// Identity is this replica's, made by Identity.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's
	// (zero: the defaults); LeaseDuration > RenewDeadline > RetryPeriod.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// OnChange, when set, is called each time this replica starts or stops
	// leading or sees another leader, with whether it leads and the
	// leader's identity ("" when none is known). Calls do not overlap.
	OnChange func(leading bool, leader string)
	Logger   *slog.Logger
}

// Elector campaigns for the Lease until its context ends, and says
// whether this replica leads and who does.
type Elector struct {
	cfg     Config
	leading atomic.Bool
	leader  atomic.Pointer[string]
	mu      sync.Mutex // orders OnChange calls
}

// New checks cfg and returns an Elector; Run starts it.
func New(cfg Config) (*Elector, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultLease
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Leases == nil || cfg.Namespace == "":
		return nil, errors.New("leader: a Lease client and namespace are required")
	case cfg.Identity == "":
		return nil, errors.New("leader: identity is required")
	case cfg.LeaseDuration <= cfg.RenewDeadline || cfg.RenewDeadline <= cfg.RetryPeriod || cfg.RetryPeriod <= 0:
		return nil, fmt.Errorf("leader: want lease duration (%s) > renew deadline (%s) > retry period (%s) > 0", cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod)
	}
	e := &Elector{cfg: cfg}
	none := ""
	e.leader.Store(&none)
	if _, err := e.elector(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Elector) elector() (*leaderelection.LeaderElector, error) {
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: e.cfg.Namespace, Name: e.cfg.Name},
			Client:     e.cfg.Leases,
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
			Labels:     map[string]string{"app.kubernetes.io/name": "sigil", "app.kubernetes.io/component": "server"},
		},
		LeaseDuration: e.cfg.LeaseDuration,
		RenewDeadline: e.cfg.RenewDeadline,
		RetryPeriod:   e.cfg.RetryPeriod,
		// A replica that stops cleanly hands over at once; it stops
		// signing before its context ends (the server's loops and API
		// stop first), so two never sign at once.
		ReleaseOnCancel: true,
		Name:            e.cfg.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { e.set(true, e.cfg.Identity) },
			OnStoppedLeading: func() { e.set(false, "") },
			OnNewLeader: func(id string) {
				if id != e.cfg.Identity {
					e.set(false, id)
				}
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("leader: %w", err)
	}
	return le, nil
}

// set records a change and reports it.
func (e *Elector) set(leading bool, leader string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	was, wasLeader := e.leading.Load(), *e.leader.Load()
	if !leading && leader == "" && !was {
		leader = wasLeader // stopped campaigning without having led: the leader is unchanged
	}
	e.leading.Store(leading)
	e.leader.Store(&leader)
	if was == leading && wasLeader == leader {
		return
	}
	switch {
	case leading:
		e.cfg.Logger.Info("leading: this replica signs", "leader", leader)
	case was:
		e.cfg.Logger.Warn("stopped leading: this replica no longer signs", "leader", e.cfg.Identity)
	default:
		e.cfg.Logger.Info("new leader", "leader", leader)
	}
	if e.cfg.OnChange != nil {
		e.cfg.OnChange(leading, leader)
	}
}

// Run campaigns until ctx is done: a replica that loses the Lease stops
// leading at once and becomes a candidate again.
func (e *Elector) Run(ctx context.Context) {
	for ctx.Err() == nil {
		le, err := e.elector()
		if err != nil { // checked in New: cannot happen
			e.cfg.Logger.Error("leader election", "error", err)
			return
		}
		le.Run(ctx)
	}
}

// IsLeader reports whether this replica holds the Lease.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Leader returns the identity of the leader last seen, "" when none was.
func (e *Elector) Leader() string { return *e.leader.Load() }

// Identity returns this replica's identity.
func (e *Elector) Identity() string { return e.cfg.Identity }
