package traffic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"unicode"
)

// strictDecode decodes the JSON js into v, refusing any field v does not
// have. Field names are case-sensitive, as in the Kubernetes API and
// Istio (Go's encoding/json alone would read "Timeout" as "timeout"). In
// a spec (proto: the Istio API, read as protobuf JSON), a field may also
// be spelled by its protobuf name, snake_case ("per_try_timeout"), as
// Istio's protojson reader accepts; nothing else is accepted. Metadata
// and status are Kubernetes JSON: camelCase only.
func strictDecode(js []byte, v any, proto bool) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("traffic: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	canon, err := canonicalKeys(raw, reflect.TypeOf(v).Elem(), "", proto)
	if err != nil {
		return err
	}
	js, err = json.Marshal(canon)
	if err != nil {
		return fmt.Errorf("traffic: %w", err)
	}
	dec = json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return fmt.Errorf("traffic: field %s: %s is not a valid %s", te.Field, te.Value, te.Type)
		}
		return fmt.Errorf("traffic: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
)

// canonicalKeys walks a decoded JSON value along the Go type it will be
// decoded into, checks every object key of a struct against the struct's
// JSON names exactly, and renames protobuf (snake_case) spellings to them.
// path is where val sits, for errors ("spec.http[0]").
func canonicalKeys(val any, t reflect.Type, path string, proto bool) (any, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return val, nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := val.(map[string]any)
		if !ok {
			return val, nil // encoding/json reports the type mismatch
		}
		fields := fieldsOf(t)
		out := make(map[string]any, len(obj))
		from := make(map[string]string, len(obj))
		for k, v := range obj {
			f, ok := fields.byJSON[k]
			if !ok && proto {
				f, ok = fields.byProto[k]
			}
			if !ok {
				return nil, unknownField(k, path, fields)
			}
			if prev, dup := from[f.json]; dup {
				return nil, fmt.Errorf("traffic: %s: fields %q and %q are the same field; set it once", join(path, f.json), prev, k)
			}
			from[f.json] = k
			sub := proto || path == "" && f.json == "spec"
			cv, err := canonicalKeys(v, f.typ, join(path, f.json), sub)
			if err != nil {
				return nil, err
			}
			out[f.json] = cv
		}
		return out, nil
	case reflect.Map:
		obj, ok := val.(map[string]any)
		if !ok {
			return val, nil
		}
		out := make(map[string]any, len(obj))
		for k, v := range obj {
			cv, err := canonicalKeys(v, t.Elem(), path+"."+k, proto)
			if err != nil {
				return nil, err
			}
			out[k] = cv
		}
		return out, nil
	case reflect.Slice:
		arr, ok := val.([]any)
		if !ok {
			return val, nil
		}
		out := make([]any, len(arr))
		for i, v := range arr {
			cv, err := canonicalKeys(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), proto)
			if err != nil {
				return nil, err
			}
			out[i] = cv
		}
		return out, nil
	}
	return val, nil
}

// unknownField names a field Sigil does not have; one that differs from a
// field only in case is named with the spelling that works.
func unknownField(k, path string, fields *structFields) error {
	at := join(path, k)
	for name := range fields.byJSON {
		if strings.EqualFold(name, k) || strings.EqualFold(protoName(name), k) {
			return fmt.Errorf("traffic: field %q is not supported: field names are case-sensitive (did you mean %q?), at %s", k, name, at)
		}
	}
	return fmt.Errorf("traffic: field %q is not supported by Sigil (or is misspelled), at %s", k, at)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// structFields indexes a struct's fields by JSON name and by protobuf name.
type structFields struct {
	byJSON, byProto map[string]field
}

type field struct {
	json string
	typ  reflect.Type
}

var fieldCache sync.Map // reflect.Type → *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	sf := &structFields{byJSON: map[string]field{}, byProto: map[string]field{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		sf.byJSON[name] = field{json: name, typ: f.Type}
		if p := protoName(name); p != name {
			sf.byProto[p] = field{json: name, typ: f.Type}
		}
	}
	fieldCache.Store(t, sf)
	return sf
}

// protoName is the protobuf field name of a lowerCamel JSON name
// ("perTryTimeout" → "per_try_timeout", "http1MaxPendingRequests" →
// "http1_max_pending_requests"), as Istio's .proto files spell them;
// protoNameExceptions holds the names whose digits start a word there.
func protoName(jsonName string) string {
	if p, ok := protoNameExceptions[jsonName]; ok {
		return p
	}
	var b strings.Builder
	for i, c := range jsonName {
		if unicode.IsUpper(c) {
			if i > 0 {
				b.WriteByte('_')
			}
			c = unicode.ToLower(c)
		}
		b.WriteRune(c)
	}
	return b.String()
}

var protoNameExceptions = map[string]string{
	"consecutive5xxErrors": "consecutive_5xx_errors",
}
