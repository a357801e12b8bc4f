package policy

import (
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// A decision cache, where it is sound. The policy is a pure function of the
// input unless it calls a non-deterministic built-in (time.now_ns,
// http.send, rand.intn, ...). So when it is pure, its decision depends only
// on the parts of the input it reads, and two requests that agree on those
// parts get the same decision. The plan lists those parts (found by
// walking every reference to input in the modules); a policy that reads
// input as a whole, through a computed key, or calls a non-deterministic
// built-in gets no plan and is evaluated every time.
//
// A cached decision costs a map lookup and a short key where a
// prepared-query evaluation costs tens of times more, in time and
// allocations (figures: bench/README.md, "Figures once quoted in the
// code"); on the sidecar the evaluation's deep recursion also grew a fresh
// goroutine stack on every request.

// keyPlan is the input paths a policy reads.
type keyPlan struct {
	paths [][]string
}

// planFor returns the plan for modules, or nil and why caching is off.
func planFor(mods []*ast.Module) (*keyPlan, string) {
	seen := map[string][]string{}
	refVars, allVars := 0, 0
	reason := ""
	visit := func(ref ast.Ref) {
		if len(ref) == 0 || !ref[0].Equal(ast.InputRootDocument) {
			return
		}
		refVars++
		var p []string
		for _, t := range ref[1:] {
			s, ok := t.Value.(ast.String)
			if !ok {
				break
			}
			p = append(p, string(s))
		}
		if len(p) == 0 {
			reason = "the policy reads input as a whole or by a computed key"
			return
		}
		seen[strings.Join(p, "\x00")] = p
	}
	for _, m := range mods {
		for _, imp := range m.Imports {
			if ref, ok := imp.Path.Value.(ast.Ref); ok {
				visit(ref)
				allVars++ // the import's own head
			}
		}
		ast.WalkRefs(m, func(r ast.Ref) bool { visit(r); return false })
		ast.WalkVars(m, func(v ast.Var) bool {
			if v.Equal(ast.InputRootDocument.Value) {
				allVars++
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if c, ok := t.Value.(ast.Call); ok && len(c) > 0 {
				if b, ok := ast.BuiltinMap[c[0].String()]; ok && b.Nondeterministic {
					reason = "the policy calls the non-deterministic built-in " + b.Name
				}
			}
			return false
		})
		ast.WalkExprs(m, func(e *ast.Expr) bool {
			if e.IsCall() {
				if b, ok := ast.BuiltinMap[e.Operator().String()]; ok && b.Nondeterministic {
					reason = "the policy calls the non-deterministic built-in " + b.Name
				}
			}
			return false
		})
	}
	if allVars > refVars {
		reason = "the policy uses input as a value"
	}
	if reason != "" {
		return nil, reason
	}
	plan := &keyPlan{}
	for _, p := range seen {
		plan.paths = append(plan.paths, p)
	}
	sort.Slice(plan.paths, func(i, j int) bool { return strings.Join(plan.paths[i], "\x00") < strings.Join(plan.paths[j], "\x00") })
	return plan, ""
}

// key is the parts of in the policy reads, each length-prefixed so that
// different inputs never share a key.
func (kp *keyPlan) key(in *Input) string {
	var b strings.Builder
	for _, p := range kp.paths {
		v := lookup(in, p)
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

// undefined marks a path the input does not have.
const undefined = "\x00undefined"

func lookup(in *Input, p []string) string {
	field := ""
	if len(p) >= 2 {
		field = p[1]
	}
	switch p[0] {
	case "source":
		if field == "" {
			return pick(map[string]string{"principal": in.Source.Principal, "namespace": in.Source.Namespace, "service_account": in.Source.ServiceAccount})
		}
		switch field {
		case "principal":
			return in.Source.Principal
		case "namespace":
			return in.Source.Namespace
		case "service_account":
			return in.Source.ServiceAccount
		}
	case "destination":
		if field == "" {
			return pick(map[string]string{"principal": in.Destination.Principal, "service": in.Destination.Service, "namespace": in.Destination.Namespace, "port": strconv.Itoa(in.Destination.Port)})
		}
		switch field {
		case "principal":
			return in.Destination.Principal
		case "service":
			return in.Destination.Service
		case "namespace":
			return in.Destination.Namespace
		case "port":
			return strconv.Itoa(in.Destination.Port)
		}
	case "connection":
		switch field {
		case "":
			return pick(map[string]string{"tls_version": in.Connection.TLSVersion})
		case "tls_version":
			return in.Connection.TLSVersion
		}
	case "request":
		switch field {
		case "":
			return pick(map[string]string{"method": in.Request.Method, "path": in.Request.Path, "url_path": in.Request.URLPath, "host": in.Request.Host, "protocol": in.Request.Protocol}) +
				pick(in.Request.Headers) + pickQuery(in.Request.parsedQuery())
		case "query":
			q := in.Request.parsedQuery()
			if len(p) == 2 {
				return pickQuery(q)
			}
			if vs, ok := q[p[2]]; ok {
				return pickValues(vs)
			}
		case "headers":
			if len(p) == 2 {
				return pick(in.Request.Headers)
			}
			if v, ok := in.Request.Headers[p[2]]; ok {
				return v
			}
		case "method":
			return in.Request.Method
		case "path":
			return in.Request.Path
		case "url_path":
			return in.Request.URLPath
		case "host":
			return in.Request.Host
		case "protocol":
			return in.Request.Protocol
		}
	}
	return undefined
}

// pickQuery is a parsed query, in a stable order.
func pickQuery(q map[string][]string) string {
	flat := make(map[string]string, len(q))
	for k, vs := range q {
		flat[k] = pickValues(vs)
	}
	return pick(flat)
}

// pickValues is a list of values, each length-prefixed.
func pickValues(vs []string) string {
	var b strings.Builder
	for _, v := range vs {
		b.WriteString(strconv.Itoa(len(v)) + ":" + v)
	}
	return b.String()
}

// readsHeaders reports whether the plan's key includes request headers.
func (kp *keyPlan) readsHeaders() bool {
	for _, p := range kp.paths {
		if p[0] == "request" && (len(p) == 1 || p[1] == "headers") {
			return true
		}
	}
	return false
}

// pick is all the fields of an object, in a stable order.
func pick(fields map[string]string) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strconv.Itoa(len(k)) + ":" + k + strconv.Itoa(len(fields[k])) + ":" + fields[k])
	}
	return b.String()
}

// decisionCache maps keys to decisions for one compiled policy. It is
// bounded by bytes, not entries: a key holds request fields a caller
// chooses (a path may be 64 KiB), so 8,192 entries of long keys once held
// over 800 MB. A key longer than MaxCacheKeyBytes is not cached (its
// request is evaluated every time), and when the keys held would pass
// MaxCacheBytes the cache starts over (cheap, and a policy's working set of
// distinct inputs is small).
type decisionCache struct {
	mu    sync.RWMutex
	m     map[string]bool
	bytes int // sum of entryBytes over m
}

// Limits of the decision cache of one policy version.
const (
	// MaxCacheBytes bounds the memory the cache accounts for: keys plus
	// a per-entry overhead.
	MaxCacheBytes = 8 << 20
	// MaxCacheKeyBytes is the longest key cached.
	MaxCacheKeyBytes = 2 << 10
	// cacheEntryOverhead is what one entry costs beside its key's bytes:
	// the map slot (string header, bool, tophash) and the key's
	// allocation rounding.
	cacheEntryOverhead = 48
)

func entryBytes(k string) int { return len(k) + cacheEntryOverhead }

func (c *decisionCache) get(k string) (bool, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *decisionCache) put(k string, v bool) {
	if len(k) > MaxCacheKeyBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok {
		c.m[k] = v
		return
	}
	if c.m == nil || c.bytes+entryBytes(k) > MaxCacheBytes {
		// A fresh map: clearing the old one would keep its grown buckets.
		c.m, c.bytes = map[string]bool{}, 0
	}
	// A copy of exactly its length: the key's builder may have left it in
	// a buffer up to twice as large.
	k = strings.Clone(k)
	c.m[k] = v
	c.bytes += entryBytes(k)
}

// size is the bytes and entries the cache holds.
func (c *decisionCache) size() (bytes, entries int) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes, len(c.m)
}
