package policy

import (
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// typeFindings type-checks the modules with the input document as OPA's
// input schema (compiler.WithSchemas, as `opa check --schema` does). OPA's
// type checker follows a variable bound to a part of input
// (r := input.request; r.methd), which checkRefs, reading references as
// written, does not. It returns one finding per reference to a field the
// document does not have, except where checkRefs already named one
// (known: file and row of its input findings).
func typeFindings(parsed map[string]*ast.Module, known []Finding) []Finding {
	ss := ast.NewSchemaSet()
	ss.Put(ast.SchemaRootRef, jsonSchema(schemaTree))
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).WithSchemas(ss)
	c.Compile(parsed)
	seen := map[string]bool{}
	for _, f := range known {
		if f.Kind == KindInput {
			seen[fmt.Sprintf("%s:%d", f.File, f.Row)] = true
		}
	}
	var out []Finding
	for _, e := range c.Errors {
		d, ok := e.Details.(*ast.RefErrInvalidDetail)
		if e.Code != ast.TypeErr || !ok || len(d.Ref) == 0 || e.Location == nil || seen[fmt.Sprintf("%s:%d", e.Location.File, e.Location.Row)] {
			continue
		}
		bad := d.Ref[:min(d.Pos+1, len(d.Ref))]
		msg := fmt.Sprintf("%s is not in Sigil's input document (%s)", bad, SchemaDoc)
		if key, ok := d.Ref[min(d.Pos, len(d.Ref)-1)].Value.(ast.String); ok && len(d.OneOf) > 0 {
			names := make([]string, 0, len(d.OneOf))
			for _, v := range d.OneOf {
				if s, ok := v.(ast.String); ok {
					names = append(names, string(s))
				}
			}
			if near := nearest(string(key), names); near != "" {
				msg += fmt.Sprintf(": no field %s there; did you mean %s?", string(key), near)
			} else {
				msg += fmt.Sprintf(": no field %s there; there are: %s", string(key), strings.Join(names, ", "))
			}
		}
		out = append(out, findingAt(e.Location, SeverityError, KindInput, msg))
	}
	return out
}

// jsonSchema is the JSON Schema of the input document below n: objects
// with exactly their fields; the free-keyed maps (headers, query) with
// values of their type.
func jsonSchema(n *node) map[string]any {
	switch {
	case n.fields != nil:
		props := make(map[string]any, len(n.fields))
		for name, child := range n.fields {
			props[name] = jsonSchema(child)
		}
		return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	case n.elem != nil && n.array:
		return map[string]any{"type": "array", "items": jsonSchema(n.elem)}
	case n.elem != nil:
		return map[string]any{"type": "object", "additionalProperties": jsonSchema(n.elem)}
	case n.field != nil && n.field.Type == TypeNumber:
		return map[string]any{"type": "number"}
	default:
		return map[string]any{"type": "string"}
	}
}
