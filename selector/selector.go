// Package selector holds the workload and node selectors that registration
// entries are matched on, in SPIRE's "type:key:value" form (for example
// "unix:uid:1000" or "unix:path:/usr/bin/web").
//
// A Selector is valid once built: the only way to get one from text is Parse,
// which checks it. Matching follows SPIRE: an entry applies to a workload when
// every selector of the entry is among the workload's selectors.
package selector

import (
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Selector is one attested property, such as type "unix" and value "uid:1000".
type Selector struct {
	Type  string
	Value string
}

// String returns the "type:value" form that Parse reads.
func (s Selector) String() string { return s.Type + ":" + s.Value }

// maxLen bounds a selector's text: selectors come from users and from the
// network, and none of the real ones is near this.
const maxLen = 1024

var (
	// ErrSyntax means the text is not of the form type:value.
	ErrSyntax = errors.New("selector: want type:value, such as unix:uid:1000")
)

// Parse reads "type:value". For the "unix" type it also checks the key and
// the value's form, so "unix:uid:abc" is refused here rather than silently
// never matching.
func Parse(s string) (Selector, error) {
	if len(s) > maxLen {
		return Selector{}, fmt.Errorf("selector: %d bytes is longer than %d", len(s), maxLen)
	}
	typ, value, ok := strings.Cut(s, ":")
	if !ok || typ == "" || value == "" {
		return Selector{}, fmt.Errorf("%w: got %q", ErrSyntax, s)
	}
	if err := checkType(typ); err != nil {
		return Selector{}, err
	}
	for _, r := range value {
		if r < 0x20 || r == 0x7f {
			return Selector{}, fmt.Errorf("selector: %q: control character in value", s)
		}
	}
	sel := Selector{Type: typ, Value: value}
	check := map[string]func(string) string{TypeUnix: checkUnix, TypeK8s: checkK8s}[typ]
	if check != nil {
		if why := check(value); why != "" {
			return Selector{}, fmt.Errorf("selector: %q: %s", s, why)
		}
	}
	return sel, nil
}

// ParseAll parses each string, naming the first that fails.
func ParseAll(ss []string) ([]Selector, error) {
	out := make([]Selector, 0, len(ss))
	for _, s := range ss {
		sel, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return Sort(out), nil
}

func checkType(typ string) error {
	for _, r := range typ {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' && r != '-' {
			return fmt.Errorf("selector: type %q: only lower-case letters, digits, '-' and '_' are allowed", typ)
		}
	}
	return nil
}

// TypeUnix is the type of the selectors the Unix workload attestor makes.
const TypeUnix = "unix"

// The keys of unix selectors, as SPIRE names them.
const (
	UnixUID    = "uid"
	UnixGID    = "gid"
	UnixUser   = "user"
	UnixGroup  = "group"
	UnixPath   = "path"
	UnixSHA256 = "sha256"
)

// checkUnix returns what is wrong with a unix selector's value, or "";
// Parse makes the error.
func checkUnix(value string) (why string) {
	key, v, ok := strings.Cut(value, ":")
	if !ok || v == "" {
		return "unix selectors are unix:KEY:VALUE"
	}
	switch key {
	case UnixUID, UnixGID:
		if _, err := strconv.ParseUint(v, 10, 32); err != nil {
			return key + " must be a decimal id"
		}
	case UnixUser, UnixGroup:
		// Names are resolved by the attestor; any non-empty name may be asked for.
	case UnixPath:
		if !strings.HasPrefix(v, "/") {
			return "path must be absolute"
		}
	case UnixSHA256:
		if b, err := hex.DecodeString(v); err != nil || len(b) != 32 || strings.ToLower(v) != v {
			return "sha256 must be 64 lower-case hex digits"
		}
	default:
		return fmt.Sprintf("unknown unix key %q (want uid, gid, user, group, path or sha256)", key)
	}
	return ""
}

// Unix builds a unix selector from a key and value made by the attestor.
func Unix(key, value string) Selector {
	return Selector{Type: TypeUnix, Value: key + ":" + value}
}

// Sort orders selectors by type, then value, and drops repeats, so that two
// sets with the same members compare equal.
func Sort(ss []Selector) []Selector {
	sort.Slice(ss, func(i, j int) bool {
		if ss[i].Type != ss[j].Type {
			return ss[i].Type < ss[j].Type
		}
		return ss[i].Value < ss[j].Value
	})
	out := ss[:0]
	for i, s := range ss {
		if i > 0 && s == ss[i-1] {
			continue
		}
		out = append(out, s)
	}
	return out
}

// Set is a workload's selectors, for matching many entries against.
type Set map[Selector]struct{}

// NewSet makes a Set of the given selectors.
func NewSet(ss ...Selector) Set {
	set := make(Set, len(ss))
	for _, s := range ss {
		set[s] = struct{}{}
	}
	return set
}

// Includes reports whether every one of want is in the set. An empty want
// never matches: an entry without selectors would grant its identity to
// every workload on the node.
func (s Set) Includes(want []Selector) bool {
	if len(want) == 0 {
		return false
	}
	for _, w := range want {
		if _, ok := s[w]; !ok {
			return false
		}
	}
	return true
}
