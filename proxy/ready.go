package proxy

import (
	"sort"
	"sync"
)

// notReady is the set of named reasons the sidecar is not ready, beyond
// start-up and drain: a listener that stopped for good, say. /ready lists
// them; any one of them fails it.
type notReady struct {
	mu      sync.Mutex
	reasons map[string]string // name → why
}

// set records (or replaces) a reason under name.
func (n *notReady) set(name, why string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.reasons == nil {
		n.reasons = map[string]string{}
	}
	n.reasons[name] = why
}

// list gives the reasons as "name: why", sorted by name.
func (n *notReady) list() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]string, 0, len(n.reasons))
	for name, why := range n.reasons {
		out = append(out, name+": "+why)
	}
	sort.Strings(out)
	return out
}
