package adminv1

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Bounds of the stats queries' parameters as ParseStatQuery and
// ParseDenialsQuery check them.
const (
	// MaxQueryName bounds a namespace or name in a stats query (a SPIFFE
	// ID is at most 2048 bytes).
	MaxQueryName = 2048
	// MaxDenialsLimit bounds the limit of GET /v1/denials.
	MaxDenialsLimit = 10000
)

// Values returns q as the query string of GET /v1/stats and /v1/edges:
// kind, namespace, name and window (a Go duration, e.g. "1m"), each only
// when set.
func (q StatQuery) Values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"kind": q.Kind, "namespace": q.Namespace, "name": q.Name} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Window != 0 {
		v.Set("window", q.Window.String())
	}
	return v
}

// ParseStatQuery reads a StatQuery from a query string as Values writes
// it. It refuses parameters it does not know, repeated parameters, a
// window that is not a positive duration, and names over MaxQueryName;
// whether the kind and window are ones the server keeps is the server's
// to say. Errors are *APIError with status 400.
func ParseStatQuery(v url.Values) (StatQuery, error) {
	var q StatQuery
	for k, vs := range v {
		if len(vs) != 1 {
			return StatQuery{}, Errorf(http.StatusBadRequest, "query parameter %q given %d times", k, len(vs))
		}
		s := vs[0]
		if len(s) > MaxQueryName {
			return StatQuery{}, Errorf(http.StatusBadRequest, "query parameter %q is longer than %d bytes", k, MaxQueryName)
		}
		switch k {
		case "kind":
			q.Kind = s
		case "namespace":
			q.Namespace = s
		case "name":
			q.Name = s
		case "window":
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return StatQuery{}, Errorf(http.StatusBadRequest, "window %q is not a positive duration such as 1m or 30s", s)
			}
			q.Window = d
		default:
			return StatQuery{}, Errorf(http.StatusBadRequest, "unknown query parameter %q (want kind, namespace, name, window)", k)
		}
	}
	return q, nil
}

// ParseDenialsQuery reads GET /v1/denials' query string: namespace and
// limit (a count in [0, MaxDenialsLimit]; 0 or none means all the server
// keeps). Errors are *APIError with status 400.
func ParseDenialsQuery(v url.Values) (namespace string, limit int, err error) {
	for k, vs := range v {
		if len(vs) != 1 {
			return "", 0, Errorf(http.StatusBadRequest, "query parameter %q given %d times", k, len(vs))
		}
		switch k {
		case "namespace":
			if len(vs[0]) > MaxQueryName {
				return "", 0, Errorf(http.StatusBadRequest, "namespace is longer than %d bytes", MaxQueryName)
			}
			namespace = vs[0]
		case "limit":
			n, perr := strconv.Atoi(vs[0])
			if perr != nil || n < 0 || n > MaxDenialsLimit {
				return "", 0, Errorf(http.StatusBadRequest, "limit %q is not a count from 0 to %d", vs[0], MaxDenialsLimit)
			}
			limit = n
		default:
			return "", 0, Errorf(http.StatusBadRequest, "unknown query parameter %q (want namespace, limit)", k)
		}
	}
	return namespace, limit, nil
}

// Stats returns golden-metric rows from the server's window.
func (c *AdminClient) Stats(ctx context.Context, q StatQuery) (StatResponse, error) {
	var out StatResponse
	err := c.do(ctx, http.MethodGet, "/v1/stats?"+q.Values().Encode(), nil, &out)
	return out, err
}

// Edges returns observed traffic between identities and services in the
// server's window (q's namespace and window; its kind and name are not
// sent).
func (c *AdminClient) Edges(ctx context.Context, q StatQuery) (EdgesResponse, error) {
	var out EdgesResponse
	err := c.do(ctx, http.MethodGet, "/v1/edges?"+StatQuery{Namespace: q.Namespace, Window: q.Window}.Values().Encode(), nil, &out)
	return out, err
}

// Denials returns up to limit of the most recent policy denials (of
// namespace, when set), newest first; limit 0 means all the server keeps.
func (c *AdminClient) Denials(ctx context.Context, namespace string, limit int) (DenialsResponse, error) {
	v := url.Values{}
	if namespace != "" {
		v.Set("namespace", namespace)
	}
	if limit != 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out DenialsResponse
	err := c.do(ctx, http.MethodGet, "/v1/denials?"+v.Encode(), nil, &out)
	return out, err
}
