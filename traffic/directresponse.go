package traffic

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// MaxDirectResponseBody is the largest body a directResponse may carry,
// in bytes (1 MiB): Istio's validation refuses a larger one ("must be
// less than 1MB") and sets Envoy's max_direct_response_body_size_bytes
// to this on a sidecar's routes (Envoy's own default is 4096).
const MaxDirectResponseBody = 1 << 20

// HTTPDirectResponse is Istio's directResponse: the sidecar answers the
// request itself with Status and Body, without any upstream.
type HTTPDirectResponse struct {
	// Status is the HTTP status, 200 to 599.
	Status uint32 `json:"status"`
	// Body is the response's body; none when nil.
	Body *HTTPBody `json:"body,omitempty"`
}

// HTTPBody is Istio's HTTPBody: exactly one of String (sent as it is)
// and Bytes (base64 in the resource, as proto's JSON has bytes).
type HTTPBody struct {
	String *string      `json:"string,omitempty"`
	Bytes  *Base64Bytes `json:"bytes,omitempty"`
}

// Base64Bytes reads bytes written in base64 as proto's JSON mapping
// accepts them: the standard or the URL-safe alphabet, padded or not.
type Base64Bytes []byte

// UnmarshalJSON implements json.Unmarshaler.
func (b *Base64Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("traffic: bytes must be a base64 string")
	}
	raw := strings.TrimRight(s, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(raw, "-_") {
		enc = base64.RawURLEncoding
	}
	v, err := enc.DecodeString(raw)
	if err != nil {
		return fmt.Errorf("traffic: bytes are not base64: %v", err)
	}
	*b = v
	return nil
}

// MarshalJSON implements json.Marshaler.
func (b Base64Bytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}

// body is the body to send: String's bytes, Bytes, or nil.
func (d *HTTPDirectResponse) body() []byte {
	switch {
	case d.Body == nil:
		return nil
	case d.Body.String != nil:
		return []byte(*d.Body.String)
	case d.Body.Bytes != nil:
		return *d.Body.Bytes
	}
	return nil
}

// DirectResponse is a route's compiled directResponse: what the sidecar
// answers with, the route's response headers applied.
type DirectResponse struct {
	Status int    // 200 to 599
	Body   []byte // at most MaxDirectResponseBody bytes; nil for none
}

// compileDirect compiles d; nil when d is.
func compileDirect(d *HTTPDirectResponse) *DirectResponse {
	if d == nil {
		return nil
	}
	return &DirectResponse{Status: int(d.Status), Body: d.body()}
}

// directResponse checks an HTTP route's directResponse as Istio does: not
// together with route, redirect, rewrite or fault; a status of 200 to 599
// (Istio's validateHTTPStatus); a body of one kind and at most
// MaxDirectResponseBody bytes.
func (v *validator) directResponse(p string, rt *HTTPRoute) {
	d := rt.DirectResponse
	if d == nil {
		return
	}
	for name, set := range map[string]bool{"route": len(rt.Route) > 0, "redirect": rt.Redirect != nil, "rewrite": rt.Rewrite != nil, "fault": rt.Fault != nil} {
		if set {
			v.fail(p, "directResponse and %s cannot both be set", name)
		}
	}
	if d.Status < 200 || d.Status > 599 {
		v.fail(p+".directResponse.status", "%d is not a status a route may answer with: want 200 to 599", d.Status)
	}
	if b := d.Body; b != nil {
		switch {
		case b.String != nil && b.Bytes != nil:
			v.fail(p+".directResponse.body", "set string or bytes, not both")
		case b.String == nil && b.Bytes == nil:
			v.fail(p+".directResponse.body", "set string or bytes")
		}
		if n := len(d.body()); n > MaxDirectResponseBody {
			v.fail(p+".directResponse.body", "%d bytes: at most %d (1 MiB, Istio's bound)", n, MaxDirectResponseBody)
		}
	}
}
