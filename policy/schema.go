package policy

import (
	"reflect"
	"sort"
	"strings"
)

// The schema of the input document: every field a policy may read, its
// type, an example value and what it means. The tree of fields is derived
// from Input's JSON tags by reflection, so it cannot drift from what the
// sidecar builds; each field's words come from fieldDocs, which a test
// checks against the tree both ways (no field undocumented, no doc for a
// field that is gone) and against docs/policy-input.md.

// Field types of the schema, as docs/policy-input.md names them.
const (
	TypeObject    = "object"
	TypeString    = "string"
	TypeNumber    = "number"
	TypeStringMap = "object (string → string)"
	TypeQueryMap  = "object (string → array of strings)"
)

// Field is one field of the input document.
type Field struct {
	// Path is the field's path under input, dot-separated
	// ("request.method").
	Path string
	// Type is one of the Type constants.
	Type string
	// Example is a value the field may hold, as JSON.
	Example string
	// Doc says what the field means.
	Doc string
	// Values, when set, is every value the field can hold (an enum):
	// a comparison with anything else is never true.
	Values []string
	// Upper means string values are upper-case (HTTP methods): a
	// comparison with a literal that has a lower-case letter is never true.
	Upper bool
	// LowerKeys means the keys of a map field are lower-case (header
	// names): a key with an upper-case letter is never present.
	LowerKeys bool
}

// fieldDoc is the part of a Field that reflection cannot give.
type fieldDoc struct {
	example   string
	doc       string
	values    []string
	upper     bool
	lowerKeys bool
}

// fieldDocs documents every field of Input, by path.
var fieldDocs = map[string]fieldDoc{
	"source":                 {example: `{"principal": "spiffe://example.org/ns/demo/sa/web", ...}`, doc: "The caller, from the X.509-SVID it presented in the mTLS handshake (verified against the trust bundle)."},
	"source.principal":       {example: `"spiffe://example.org/ns/demo/sa/web"`, doc: "The caller's SPIFFE ID."},
	"source.namespace":       {example: `"demo"`, doc: "The caller's namespace, from a SPIFFE ID of exactly the form spiffe://TD/ns/NS/sa/SA; empty for any other ID."},
	"source.service_account": {example: `"web"`, doc: "The caller's service account, from the same form of SPIFFE ID; empty for any other ID."},
	"destination":            {example: `{"principal": "spiffe://example.org/ns/demo/sa/api", ...}`, doc: "The service being called: the sidecar's own workload."},
	"destination.principal":  {example: `"spiffe://example.org/ns/demo/sa/api"`, doc: "The SPIFFE ID of the workload the sidecar serves."},
	"destination.service":    {example: `"api"`, doc: "The name of the service the sidecar serves (its --service)."},
	"destination.namespace":  {example: `"demo"`, doc: "The namespace of that service (the one in the sidecar's SPIFFE ID on plain hosts)."},
	"destination.port":       {example: `8080`, doc: "The app's port the sidecar forwards to."},
	"request":                {example: `{"method": "GET", "path": "/v1/items?limit=10", ...}`, doc: "The request. For an opaque TCP connection only protocol is set (the strings are empty, headers and query are {})."},
	"request.method":         {example: `"GET"`, doc: "The HTTP method, upper-case as sent (methods are case-sensitive, RFC 9110 §9.1): a policy comparing with \"get\" never matches. gRPC calls are POST.", upper: true},
	"request.path":           {example: `"/v1/items?limit=10"`, doc: "The request target with its query, normalized (RFC 3986 dot segments and percent-encoding, merged slashes, Istio's rules since CVE-2021-31920; see docs/security.md): exactly the path the app receives, not what the client sent."},
	"request.url_path":       {example: `"/v1/items"`, doc: "request.path without the query."},
	"request.query":          {example: `{"limit": ["10"]}`, doc: "The query, parsed: each name maps to its values in order (as OPA-Envoy's parsed_query). Names are free: a policy may read any."},
	"request.host":           {example: `"api.demo"`, doc: "The Host header (HTTP/1.1) or :authority (HTTP/2), as sent."},
	"request.headers":        {example: `{"user-agent": "curl/8.5.0"}`, doc: "The request headers: lower-case names, repeated values joined with \",\". Names are free: a policy may read any, but only lower-case names are ever present.", lowerKeys: true},
	"request.protocol":       {example: `"http"`, doc: "How the request came: http (HTTP/1.1 or HTTP/2), grpc, or tcp (an opaque connection, decided once when it opens).", values: []string{ProtocolHTTP, ProtocolGRPC, ProtocolTCP}},
	"connection":             {example: `{"tls_version": "TLSv1.3"}`, doc: "The mTLS connection the request came on."},
	"connection.tls_version": {example: `"TLSv1.3"`, doc: "The TLS version of the connection. Sidecars speak only TLS 1.3, so it is always TLSv1.3.", values: []string{TLSVersion13}},
}

// TLSVersion13 is the only connection.tls_version a sidecar reports: it
// speaks TLS 1.3 only.
const TLSVersion13 = "TLSv1.3"

// node is one level of the schema tree.
type node struct {
	field  *Field
	fields map[string]*node // an object's fields, by JSON name
	order  []string         // the fields' names in Input's order
	elem   *node            // a map's values (free keys) or an array's elements
	array  bool             // elem is an array's element, not a map's value
}

// schemaTree is the input document's tree, built once.
var schemaTree = buildSchema()

// Schema returns every field of the input document, depth first in the
// order of Input's fields.
func Schema() []Field {
	var out []Field
	var walk func(n *node)
	walk = func(n *node) {
		if n.field != nil {
			out = append(out, *n.field)
		}
		for _, name := range n.order {
			walk(n.fields[name])
		}
	}
	walk(schemaTree)
	return out
}

func buildSchema() *node {
	root := &node{fields: map[string]*node{}}
	addFields(root, "", reflect.TypeFor[Input]())
	return root
}

// addFields adds the JSON fields of struct type t under n, at prefix.
func addFields(n *node, prefix string, t reflect.Type) {
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		d := fieldDocs[path]
		child := &node{field: &Field{Path: path, Example: d.example, Doc: d.doc, Values: d.values, Upper: d.upper, LowerKeys: d.lowerKeys}}
		switch ft := f.Type; ft.Kind() {
		case reflect.Struct:
			child.field.Type = TypeObject
			child.fields = map[string]*node{}
			addFields(child, path+".", ft)
		case reflect.String:
			child.field.Type = TypeString
		case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint16, reflect.Uint32:
			child.field.Type = TypeNumber
		case reflect.Map:
			switch {
			case ft.Elem().Kind() == reflect.String:
				child.field.Type = TypeStringMap
				child.elem = &node{field: &Field{Path: path + ".*", Type: TypeString}}
			case ft.Elem().Kind() == reflect.Slice && ft.Elem().Elem().Kind() == reflect.String:
				child.field.Type = TypeQueryMap
				child.elem = &node{field: &Field{Path: path + ".*", Type: "array of strings"}, array: true,
					elem: &node{field: &Field{Path: path + ".*[*]", Type: TypeString}}}
			default:
				panic("policy: the schema has no type for map field " + path)
			}
		default:
			// Input is this package's own type: a field of a new kind
			// must be taught to the schema (the tests build it).
			panic("policy: the schema has no type for field " + path)
		}
		n.fields[name] = child
		n.order = append(n.order, name)
	}
}

// leaf reports whether n holds a scalar (string or number): nothing
// below it can be read.
func (n *node) leaf() bool { return n.fields == nil && n.elem == nil }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
