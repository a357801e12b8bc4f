package proxy

import (
	"net/http"
	"net/url"

	"github.com/sigil-mesh/sigil/pathnorm"
	"github.com/sigil-mesh/sigil/proxy/hop"
)

// normalizeTarget normalizes r's request target in place (package
// pathnorm), before routing and authorization, so that the path matched
// and authorized is the one forwarded. It leaves the URL's scheme and host
// (an absolute-form target names the service) and returns the normalized
// path and query; r.RequestURI is then the origin-form target. An error
// means the request must be refused with 400.
func (p *Proxy) normalizeTarget(r *http.Request) (pathnorm.Target, error) {
	target := r.RequestURI
	if target == "" {
		target = r.URL.RequestURI()
	}
	t, err := p.cfg.paths.Target(r.Method, target)
	if err != nil || !t.Changed {
		return t, err
	}
	u := r.URL
	if err := setEscapedPath(u, t.Path); err != nil {
		return t, err
	}
	u.RawQuery, u.ForceQuery, u.Opaque, u.Fragment, u.RawFragment = t.Query, false, "", "", ""
	r.RequestURI = t.URI()
	return t, nil
}

// setEscapedPath sets u's path from its escaped form p, keeping p as the
// form sent (RawPath) where decoding would lose an escape.
func setEscapedPath(u *url.URL, p string) error {
	var err error
	if u.Path, err = url.PathUnescape(p); err != nil {
		return err // unreachable for a normalized path: its escapes are well formed
	}
	u.RawPath = ""
	if u.EscapedPath() != p {
		u.RawPath = p
	}
	return nil
}

// refuseTarget answers a request whose target cannot be normalized.
func refuseTarget(w http.ResponseWriter, r *http.Request, err error) {
	hop.WriteError(w, r, http.StatusBadRequest, "sigil: "+err.Error())
}
