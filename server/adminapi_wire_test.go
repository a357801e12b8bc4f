package server

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/server/registry"
)

// fill sets every field of v (a pointer) to a value that is not its zero,
// so a store field the wire twin forgets shows up in the JSON comparison.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 29, 1, 2, 3, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			fill(t, v.Field(i))
		}
	case reflect.String:
		v.SetString("s-" + v.Type().String())
	case reflect.Int, reflect.Int64:
		v.SetInt(7)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // json.RawMessage
			v.SetBytes([]byte(`{"k":1}`))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range 2 {
			fill(t, v.Index(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(t, k)
		fill(t, e)
		v.SetMapIndex(k, e)
	default:
		t.Fatalf("fill: no value for a %s", v.Type())
	}
}

// TestWireTwins checks that each admin API wire type (api/admin/v1)
// encodes exactly as the store record it replaced on the wire did: same
// field names, same values, nothing dropped. The JSON is the API, which
// `sigil-server entry list --output json` and scripts read. A pair with no
// conversion (the server builds the wire value itself) is checked by
// decoding one's JSON strictly into the other.
func TestWireTwins(t *testing.T) {
	tests := []struct {
		name    string
		from    any // filled in every field
		wire    any // a pointer to the wire type, for pairs with no conversion
		convert func(any) any
	}{
		{"Entry", &registry.Entry{}, nil, func(v any) any { return wireEntry(*v.(*registry.Entry)) }},
		{"Agent", &registry.Agent{}, nil, func(v any) any { return wireAgent(*v.(*registry.Agent)) }},
		{"StoredResource", &registry.StoredResource{}, nil, func(v any) any { return wireResource(*v.(*registry.StoredResource)) }},
		{"ProxyRecord", &registry.ProxyRecord{}, nil, func(v any) any { return wireProxy(*v.(*registry.ProxyRecord)) }},
		{"ResourceKey", &adminv1.ResourceKey{}, nil, func(v any) any { return storeKey(*v.(*adminv1.ResourceKey)) }},
		{"ApplyResult", &registry.ApplyResult{}, &adminv1.Result{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fill(t, reflect.ValueOf(tt.from).Elem())
			want, err := json.Marshal(tt.from)
			if err != nil {
				t.Fatal(err)
			}
			to := tt.wire
			if tt.convert != nil {
				to = tt.convert(tt.from)
			} else {
				dec := json.NewDecoder(bytes.NewReader(want))
				dec.DisallowUnknownFields()
				if err := dec.Decode(to); err != nil {
					t.Fatalf("decoding into the wire type: %v", err)
				}
			}
			got, err := json.Marshal(to)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("wire twin encodes differently:\n got %s\nwant %s", got, want)
			}
		})
	}
}
