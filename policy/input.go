package policy

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/sigil-mesh/sigil/naming"
	"github.com/sigil-mesh/sigil/pathnorm"
	"github.com/sigil-mesh/sigil/protocol"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Input is the document every decision is made on (DESIGN.md, Policy). Its
// JSON form is what Rego sees as `input` and what decision logs record.
type Input struct {
	Source      Peer       `json:"source"`
	Destination Dest       `json:"destination"`
	Request     Request    `json:"request"`
	Connection  Connection `json:"connection"`
}

// Peer is the caller, from its verified X.509-SVID.
type Peer struct {
	Principal      string `json:"principal"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"service_account"`
}

// Dest is the service being called.
type Dest struct {
	Principal string `json:"principal"`
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	Port      int    `json:"port"`
}

// Request describes the request; for TCP only Protocol is set.
type Request struct {
	Method string `json:"method"`
	// Path is the normalized request target with its query, exactly as
	// the app receives it (see package pathnorm); URLPath is the same
	// without the query, and Query the query parsed (name -> values, in
	// order, as OPA-Envoy's parsed_query). When URLPath is empty they are
	// derived from Path.
	Path    string              `json:"path"`
	URLPath string              `json:"url_path"`
	Query   map[string][]string `json:"query"`
	// RawQuery, with Query nil, is parsed only if the policy in force
	// reads the query or decisions are logged.
	RawQuery string            `json:"-"`
	Host     string            `json:"host"`
	Headers  map[string]string `json:"headers"`
	Protocol string            `json:"protocol"` // http, grpc or tcp
	// HeadersFrom, with Headers nil, builds Headers only if the policy in
	// force reads them or decisions are logged.
	HeadersFrom func() map[string]string `json:"-"`
}

// Connection describes the mTLS connection the request came on.
type Connection struct {
	TLSVersion string `json:"tls_version"`
}

// The values of Request.Protocol; their one home is package protocol,
// which the proxy's leaf packages import without this one.
const (
	ProtocolHTTP = protocol.HTTP
	ProtocolGRPC = protocol.GRPC
	ProtocolTCP  = protocol.TCP
)

// PeerFromID fills namespace and service account from a workload ID of
// exactly the form spiffe://td/ns/<ns>/sa/<sa> (naming.NamespaceServiceAccount,
// the rule the server and the proxy read IDs by); other IDs, with a
// prefix, a suffix or another path, have no namespace and leave both
// empty.
func PeerFromID(id string) Peer {
	p := Peer{Principal: id}
	if parsed, err := spiffeid.FromString(id); err == nil {
		p.Namespace, p.ServiceAccount, _ = naming.NamespaceServiceAccount(parsed)
	}
	return p
}

// fill derives URLPath and RawQuery from Path where the caller set only
// Path (decision logs written before url_path existed, tests).
func (r *Request) fill() {
	if r.URLPath == "" && r.Path != "" {
		r.URLPath, r.RawQuery, _ = strings.Cut(r.Path, "?")
	}
}

// parsedQuery is Query, parsed from RawQuery on first use.
func (r *Request) parsedQuery() map[string][]string {
	if r.Query == nil && r.RawQuery != "" {
		r.Query = pathnorm.ParseQuery(r.RawQuery)
	}
	return r.Query
}

func str(s string) *ast.Term { return ast.StringTerm(s) }

// value builds the AST of the input directly: converting a Go value
// through OPA's generic path (JSON round trip and reflection) costs more
// than the evaluation of a small policy.
func (in *Input) value() ast.Value {
	headers := make([][2]*ast.Term, 0, len(in.Request.Headers))
	for k, v := range in.Request.Headers {
		headers = append(headers, [2]*ast.Term{str(k), str(v)})
	}
	query := make([][2]*ast.Term, 0, len(in.Request.parsedQuery()))
	for k, vs := range in.Request.Query {
		terms := make([]*ast.Term, len(vs))
		for i, v := range vs {
			terms[i] = str(v)
		}
		query = append(query, [2]*ast.Term{str(k), ast.ArrayTerm(terms...)})
	}
	return ast.NewObject(
		[2]*ast.Term{str("source"), ast.ObjectTerm(
			[2]*ast.Term{str("principal"), str(in.Source.Principal)},
			[2]*ast.Term{str("namespace"), str(in.Source.Namespace)},
			[2]*ast.Term{str("service_account"), str(in.Source.ServiceAccount)},
		)},
		[2]*ast.Term{str("destination"), ast.ObjectTerm(
			[2]*ast.Term{str("principal"), str(in.Destination.Principal)},
			[2]*ast.Term{str("service"), str(in.Destination.Service)},
			[2]*ast.Term{str("namespace"), str(in.Destination.Namespace)},
			[2]*ast.Term{str("port"), ast.IntNumberTerm(in.Destination.Port)},
		)},
		[2]*ast.Term{str("request"), ast.ObjectTerm(
			[2]*ast.Term{str("method"), str(in.Request.Method)},
			[2]*ast.Term{str("path"), str(in.Request.Path)},
			[2]*ast.Term{str("url_path"), str(in.Request.URLPath)},
			[2]*ast.Term{str("query"), ast.ObjectTerm(query...)},
			[2]*ast.Term{str("host"), str(in.Request.Host)},
			[2]*ast.Term{str("headers"), ast.ObjectTerm(headers...)},
			[2]*ast.Term{str("protocol"), str(in.Request.Protocol)},
		)},
		[2]*ast.Term{str("connection"), ast.ObjectTerm(
			[2]*ast.Term{str("tls_version"), str(in.Connection.TLSVersion)},
		)},
	)
}
