package upstream

import (
	"encoding/binary"
	"hash/fnv"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/traffic"
)

// HashPolicy is a cluster's loadBalancer.consistentHash: which part of a
// request is its key. Requests with the same key go to the same endpoint
// among those the cluster would otherwise pick from (outlier-ejected ones
// and, on a retry, those already tried are left out); a request without
// the key goes to the cluster's usual balancer.
//
// Sigil hashes by rendezvous (highest random weight, Thaler and Ravishankar
// 1996): each endpoint's score is a hash of (key, endpoint address), the
// highest wins. It is consistent as Envoy's ring and Maglev are: removing
// an endpoint moves only the keys it held, adding one takes an even share
// from each; and, with no table, ringHash and maglev sizes have nothing to
// tune. Every sidecar maps a key to the same endpoint.
type HashPolicy struct {
	header, query string
	sourceIP      bool
	cookie        *hashCookie
}

// hashCookie is httpCookie: the key is the cookie's value; generate says
// whether a request without it gets one (ttl given), maxAge its Max-Age in
// seconds (0: a session cookie).
type hashCookie struct {
	name, path string
	generate   bool
	maxAge     int
}

// hashPolicyOf reads a policy's consistentHash (nil: none).
func hashPolicyOf(p *traffic.TrafficPolicy) *HashPolicy {
	if p == nil || p.LoadBalancer == nil || p.LoadBalancer.ConsistentHash == nil {
		return nil
	}
	ch := p.LoadBalancer.ConsistentHash
	hp := &HashPolicy{header: http.CanonicalHeaderKey(ch.HTTPHeaderName), query: ch.HTTPQueryParameterName, sourceIP: ch.UseSourceIP}
	if c := ch.HTTPCookie; c != nil {
		hp.cookie = &hashCookie{name: c.Name, path: c.Path, generate: c.TTL != nil}
		if c.TTL != nil && c.TTL.Duration > 0 {
			// Max-Age is whole seconds; a ttl under 1s is still not a
			// session cookie.
			hp.cookie.maxAge = max(1, int(c.TTL.Duration/time.Second))
		}
	}
	return hp
}

// Key is r's hash key ("": none, the usual balancer picks) and, for an
// httpCookie the request lacks, the cookie to set on the response: its
// value (the key) is a hash of the source address, as Envoy generates it.
func (hp *HashPolicy) Key(r *http.Request) (string, *http.Cookie) {
	switch {
	case hp == nil:
		return "", nil
	case hp.header != "":
		return strings.Join(r.Header.Values(hp.header), ","), nil
	case hp.query != "":
		if r.URL == nil {
			return "", nil
		}
		return r.URL.Query().Get(hp.query), nil
	case hp.sourceIP:
		return sourceIP(r), nil
	case hp.cookie != nil:
		if c, err := r.Cookie(hp.cookie.name); err == nil && c.Value != "" {
			return c.Value, nil
		}
		if !hp.cookie.generate {
			return "", nil
		}
		v := strconv.FormatUint(hash64(r.RemoteAddr), 16)
		return v, &http.Cookie{Name: hp.cookie.name, Value: v, Path: hp.cookie.path, MaxAge: hp.cookie.maxAge, HttpOnly: true}
	}
	return "", nil
}

// ConnKey is the key of a connection with no request to read (a
// transparent TCP one): its source IP under useSourceIp, else none.
func (hp *HashPolicy) ConnKey(remote net.Addr) string {
	if hp == nil || !hp.sourceIP || remote == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(remote.String())
	if err != nil {
		return remote.String()
	}
	return host
}

// sourceIP is the IP of r's client, the app's end of its connection.
func sourceIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// rendezvous is the endpoint of cands with the highest score for key.
func rendezvous(cands []*Endpoint, key string) *Endpoint {
	var best *Endpoint
	var bestScore uint64
	for _, e := range cands {
		if s := hash64(key + "\x00" + e.Addr); best == nil || s > bestScore {
			best, bestScore = e, s
		}
	}
	return best
}

// hash64 is FNV-1a finished with splitmix64's mixer, so that keys which
// differ in a byte spread over all 64 bits; stable across processes.
func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := binary.BigEndian.Uint64(h.Sum(nil))
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
