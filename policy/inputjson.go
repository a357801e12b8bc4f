package policy

import (
	"strconv"

	"github.com/sigil-mesh/sigil/internal/jsonenc"
)

// appendInput appends in's JSON exactly as json.Marshal encodes it, without
// reflection: a sidecar that records its decisions encodes one input per
// request. It reports false when in holds a string json.Marshal would
// escape (then the caller uses json.Marshal). TestAppendInputIsMarshal
// fills every field of Input by reflection and compares, so a field added
// to Input and not here fails it. The headers named in exceptHeaders
// are left out, as if deleted from Request.Headers (the mask's).
func appendInput(b []byte, in *Input, exceptHeaders []string) ([]byte, bool) {
	ok := true
	var keys [16]string // the sorted keys of a map, off the heap for small ones
	str := func(s string) {
		var fits bool
		b, fits = jsonenc.AppendString(b, s)
		ok = ok && fits
	}
	field := func(name string, v string) {
		b = append(b, name...)
		str(v)
	}
	field(`{"source":{"principal":`, in.Source.Principal)
	field(`,"namespace":`, in.Source.Namespace)
	field(`,"service_account":`, in.Source.ServiceAccount)
	field(`},"destination":{"principal":`, in.Destination.Principal)
	field(`,"service":`, in.Destination.Service)
	field(`,"namespace":`, in.Destination.Namespace)
	b = append(b, `,"port":`...)
	b = strconv.AppendInt(b, int64(in.Destination.Port), 10)
	r := &in.Request
	field(`},"request":{"method":`, r.Method)
	field(`,"path":`, r.Path)
	field(`,"url_path":`, r.URLPath)
	b = append(b, `,"query":`...)
	if r.Query == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '{')
		for i, k := range jsonenc.AppendSortedKeys(keys[:0], r.Query) {
			if i > 0 {
				b = append(b, ',')
			}
			str(k)
			b = append(b, ':')
			vs := r.Query[k]
			if vs == nil {
				b = append(b, "null"...)
				continue
			}
			b = append(b, '[')
			for j, v := range vs {
				if j > 0 {
					b = append(b, ',')
				}
				str(v)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	field(`,"host":`, r.Host)
	b = append(b, `,"headers":`...)
	if r.Headers == nil {
		b = append(b, "null"...)
	} else {
		var fits bool
		b, fits = jsonenc.AppendStringMapExcept(b, r.Headers, exceptHeaders)
		ok = ok && fits
	}
	field(`,"protocol":`, r.Protocol)
	field(`},"connection":{"tls_version":`, in.Connection.TLSVersion)
	b = append(b, "}}"...)
	return b, ok
}
