package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type dur struct{ time.Duration }

func (d *dur) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	d.Duration = v
	return err
}

type retry struct {
	Attempts      int  `json:"attempts"`
	PerTryTimeout *dur `json:"perTryTimeout,omitempty"`
}

type route struct {
	Retries *retry            `json:"retries,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Errors5 int               `json:"consecutive5xxErrors,omitempty"`
	HTTP1   int               `json:"http1MaxPendingRequests,omitempty"`
}

type doc struct {
	Kind string  `json:"kind"`
	Spec []route `json:"spec"`
}

// Field names are matched exactly (encoding/json would match them
// without case); protobuf names only where asked for.
func TestStrictJSONCaseSensitive(t *testing.T) {
	tests := []struct {
		name, in string
		opts     []Option
		path     string // of the UnknownFieldError; "" : accepted
		suggest  string
	}{
		{"exact", `{"kind":"a","spec":[{"retries":{"attempts":1}}]}`, nil, "", ""},
		{"case differs", `{"Kind":"a"}`, nil, "Kind", "kind"},
		{"nested case", `{"spec":[{"retries":{"Attempts":1}}]}`, nil, "spec[0].retries.Attempts", "attempts"},
		{"unknown", `{"spec":[{"corsPolicy":{}}]}`, nil, "spec[0].corsPolicy", ""},
		{"snake without Proto", `{"spec":[{"retries":{"per_try_timeout":"1s"}}]}`, nil, "spec[0].retries.per_try_timeout", "perTryTimeout"},
		{"snake under spec", `{"spec":[{"retries":{"per_try_timeout":"1s"}}]}`, []Option{Proto("spec")}, "", ""},
		{"snake outside spec", `{"ki_nd":"a"}`, []Option{Proto("spec")}, "ki_nd", ""},
		{"snake everywhere", `[{"consecutive_5xx_errors":1,"http1_max_pending_requests":2}]`, []Option{Proto("")}, "", ""},
		{"map keys untouched", `{"spec":[{"headers":{"X-Any_Case":"v"}}]}`, nil, "", ""},
	}
	for _, tt := range tests {
		var err error
		if strings.HasPrefix(tt.in, "[") {
			var v []route
			err = Unmarshal([]byte(tt.in), &v, tt.opts...)
		} else {
			var v doc
			err = Unmarshal([]byte(tt.in), &v, tt.opts...)
		}
		var uf *UnknownFieldError
		switch {
		case tt.path == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.path != "" && !errors.As(err, &uf):
			t.Errorf("%s: %v, want an unknown field at %s", tt.name, err, tt.path)
		case tt.path != "" && (uf.Path != tt.path || uf.Suggest != tt.suggest):
			t.Errorf("%s: %+v, want path %s, suggestion %q", tt.name, uf, tt.path, tt.suggest)
		}
	}
	var v []route
	if err := Unmarshal([]byte(`[{"consecutive_5xx_errors":1,"http1_max_pending_requests":2,"retries":{"per_try_timeout":"2s"}}]`), &v, Proto("")); err != nil || v[0].Errors5 != 1 || v[0].HTTP1 != 2 || v[0].Retries.PerTryTimeout.Duration != 2*time.Second {
		t.Fatalf("protobuf names not applied: %+v %v", v, err)
	}
	if err := Unmarshal([]byte(`[{"http1MaxPendingRequests":1,"http1_max_pending_requests":2}]`), &v, Proto("")); err == nil || !strings.Contains(err.Error(), "same field") {
		t.Fatalf("two spellings: %v", err)
	}
}

type base struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

type withEmbedded struct {
	base
	Name string `json:"name"` // wins over base's
	Spec string `json:"spec"`
}

// Fields of an embedded struct are promoted, as encoding/json promotes
// them.
func TestStrictJSONEmbedded(t *testing.T) {
	var v withEmbedded
	if err := Unmarshal([]byte(`{"kind":"k","name":"n","spec":"s"}`), &v); err != nil || v.Kind != "k" || v.Name != "n" || v.Spec != "s" {
		t.Fatalf("%+v %v", v, err)
	}
	var uf *UnknownFieldError
	if err := Unmarshal([]byte(`{"base":{}}`), &v); !errors.As(err, &uf) {
		t.Fatalf("the embedded struct's own name: %v", err)
	}
}

// Whatever the input, Unmarshal never panics, and what it accepts
// encoding/json accepts with the same result.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"kind":"a","spec":[{"retries":{"attempts":1,"perTryTimeout":"1s"}}]}`))
	f.Add([]byte(`{"spec":[{"retries":{"per_try_timeout":"1s"}},{"headers":{"a":"b"}}]}`))
	f.Add([]byte(`{"Kind":1,"spec":{"x":null}}`))
	f.Add([]byte(`[1,2,{"a":[]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got doc
		if err := Unmarshal(data, &got, Proto("spec")); err != nil {
			return
		}
		if strings.Contains(string(data), "_") {
			return // a protobuf name encoding/json would not read
		}
		var want doc
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", data, err)
		}
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(want)
		if string(a) != string(b) {
			t.Fatalf("%q: decoded %s, encoding/json %s", data, a, b)
		}
	})
}
