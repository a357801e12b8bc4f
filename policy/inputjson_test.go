package policy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// fillAll sets every exported field reachable from v: strings to s, ints
// to 7, maps to one entry, slices to one element.
func fillAll(v reflect.Value, s string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() && v.Field(i).Kind() != reflect.Func {
				fillAll(v.Field(i), s)
			}
		}
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint32, reflect.Uint64:
		if v.CanInt() {
			v.SetInt(7)
		} else {
			v.SetUint(7)
		}
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fillAll(k, s+"k")
		fillAll(e, s)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Slice:
		sl := reflect.MakeSlice(v.Type(), 1, 1)
		fillAll(sl.Index(0), s)
		v.Set(sl)
	}
}

// appendInput encodes Input as json.Marshal does, every field of it (a
// field added to Input and not to appendInput fails here).
func TestAppendInputIsMarshal(t *testing.T) {
	var full Input
	fillAll(reflect.ValueOf(&full).Elem(), "v")
	twoKeys := input("GET")
	twoKeys.Request.Query = map[string][]string{"b": {"1", "2"}, "a": nil, "c": {}}
	twoKeys.Request.Headers = map[string]string{"z": "1", "a": "2"}
	for _, in := range []*Input{&full, {}, input("POST"), twoKeys} {
		want, _ := json.Marshal(in)
		got, ok := appendInput(nil, in, nil)
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("appendInput %s (%v)\njson.Marshal %s", got, ok, want)
		}
	}
	odd := input("GET")
	odd.Request.Headers["x"] = "<script>"
	if _, ok := appendInput(nil, odd, nil); ok {
		t.Error("a value json.Marshal escapes was encoded as it is")
	}
}
