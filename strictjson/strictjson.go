// Package strictjson decodes JSON as the Kubernetes API server and Istio
// read it (Caddy's StrictUnmarshalJSON is the model): a field the target
// type does not have is an error, and field names are case-sensitive —
// Go's encoding/json alone would read "Timeout" into "timeout". Where a
// document is protobuf JSON (an Istio spec), a field may also be spelled
// by its protobuf name, snake_case ("per_try_timeout"), as protojson
// accepts; nothing else is accepted.
//
//	var spec traffic.VirtualServiceSpec
//	err := strictjson.Unmarshal(data, &spec, strictjson.Proto(""))
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode"
)

// Option changes how Unmarshal reads field names.
type Option func(*options)

type options struct {
	proto   bool
	protoIn string
}

// Proto accepts protobuf (snake_case) field names in the value of the
// top-level field named field, or everywhere when field is "" (the
// document is a protobuf message).
func Proto(field string) Option {
	return func(o *options) { o.proto, o.protoIn = true, field }
}

// UnknownFieldError is a field the target type does not have.
type UnknownFieldError struct {
	Field string // as written
	Path  string // where: "spec.http[0].Timeout"
	// Suggest is the field's right spelling when Field differs from it
	// only in case (or is its protobuf name where that is not accepted).
	Suggest string
}

func (e *UnknownFieldError) Error() string {
	if e.Suggest != "" {
		return fmt.Sprintf("strictjson: unknown field %q at %s: field names are case-sensitive (did you mean %q?)", e.Field, e.Path, e.Suggest)
	}
	return fmt.Sprintf("strictjson: unknown field %q at %s", e.Field, e.Path)
}

// Unmarshal decodes the JSON value data holds into v (a pointer),
// refusing unknown fields and names that match a field only without case
// (an *UnknownFieldError), and a field given twice under its two
// spellings. Other errors are encoding/json's.
func Unmarshal(data []byte, v any, opts ...Option) error {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("strictjson: data after the JSON value")
	}
	canon, err := canonicalKeys(raw, reflect.TypeOf(v).Elem(), "", o.proto && o.protoIn == "", o)
	if err != nil {
		return err
	}
	data, err = json.Marshal(canon)
	if err != nil {
		return err
	}
	dec = json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	rawMessageType  = reflect.TypeFor[json.RawMessage]()
)

// canonicalKeys walks a decoded JSON value along the Go type it will be
// decoded into, checks every object key of a struct against the struct's
// JSON names exactly, and renames protobuf (snake_case) spellings to them.
// path is where val sits, for errors ("spec.http[0]").
func canonicalKeys(val any, t reflect.Type, path string, proto bool, o options) (any, error) {
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
				return nil, fmt.Errorf("strictjson: %s: fields %q and %q are the same field; set it once", join(path, f.json), prev, k)
			}
			from[f.json] = k
			sub := proto || o.proto && path == "" && f.json == o.protoIn
			cv, err := canonicalKeys(v, f.typ, join(path, f.json), sub, o)
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
			cv, err := canonicalKeys(v, t.Elem(), path+"."+k, proto, o)
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
			cv, err := canonicalKeys(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), proto, o)
			if err != nil {
				return nil, err
			}
			out[i] = cv
		}
		return out, nil
	}
	return val, nil
}

// unknownField names a field the struct lacks, with the spelling that
// works when it differs only in case.
func unknownField(k, path string, fields *structFields) error {
	e := &UnknownFieldError{Field: k, Path: join(path, k)}
	for name := range fields.byJSON {
		if strings.EqualFold(name, k) || strings.EqualFold(protoName(name), k) {
			e.Suggest = name
		}
	}
	return e
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

// fieldsOf indexes t's fields. It is not cached: resources are small
// and rare next to what a cache shared by every caller would cost in
// process-global state.
func fieldsOf(t reflect.Type) *structFields {
	sf := &structFields{byJSON: map[string]field{}, byProto: map[string]field{}}
	sf.add(t, false)
	return sf
}

// add indexes t's fields; those of an embedded struct without a JSON
// name are promoted, as encoding/json promotes them, and give way to a
// field of the outer struct with the same name.
func (sf *structFields) add(t reflect.Type, promoted bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			sf.add(ft, true)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, taken := sf.byJSON[name]; taken && promoted {
			continue
		}
		sf.byJSON[name] = field{json: name, typ: f.Type}
		if p := protoName(name); p != name {
			sf.byProto[p] = field{json: name, typ: f.Type}
		}
	}
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
