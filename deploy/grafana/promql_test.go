package grafana

import (
	"reflect"
	"strings"
	"testing"
)

// TestParseExprFindsEverySelector: the tokenizer finds each metric and
// the labels its matchers and groupings use, and nothing else (function
// names, keywords, strings, durations, Grafana variables), and refuses
// what it cannot read.
func TestParseExprFindsEverySelector(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		want     []Selector
		grouping []string
	}{
		{`up`, []Selector{{Metric: "up"}}, nil},
		{`sum(rate(sigil_requests_total{reporter="source",response_code!~"5.."}[$__rate_interval]))`,
			[]Selector{{Metric: "sigil_requests_total", Labels: []string{"reporter", "response_code"}}}, nil},
		{`histogram_quantile(0.99, sum by (le, destination_service_name) (rate(sigil_request_duration_milliseconds_bucket{reporter="destination"}[5m])))`,
			[]Selector{{Metric: "sigil_request_duration_milliseconds_bucket", Labels: []string{"reporter"}}}, []string{"le", "destination_service_name"}},
		{`sum(rate(a_total[1m] offset 1h)) without (instance) / on(job) group_left(version) b_info`,
			[]Selector{{Metric: "a_total"}, {Metric: "b_info"}}, []string{"instance", "job", "version"}},
		{`sum by (le,) (x) + topk(3, count without (a) (y))`, []Selector{{Metric: "x"}, {Metric: "y"}}, []string{"le", "a"}},
		{`a > bool 1e3 and b unless c or vector(0) * Inf`,
			[]Selector{{Metric: "a"}, {Metric: "b"}, {Metric: "c"}}, nil},
		{`sum(x{l=~"$namespace",m='it''s'}) by (n)`, nil, nil}, // a quote inside: refused below
		{`{__name__="sigil_svid_expiry_seconds", job = "sigil-sidecar"}`,
			[]Selector{{Metric: "sigil_svid_expiry_seconds", Labels: []string{"job"}}}, nil},
		{`label_replace(m{a="rate(fake_metric{x=\"1\"})"}, "dst", "$1", "src", "(.*)")`,
			[]Selector{{Metric: "m", Labels: []string{"a"}}}, nil},
		{`max_over_time(sigil_config_version[30m:1m]) - ${offset:raw}`,
			[]Selector{{Metric: "sigil_config_version"}}, nil},
		{`ns:requests:rate5m{ns="x"}`, []Selector{{Metric: "ns:requests:rate5m", Labels: []string{"ns"}}}, nil},
	} {
		got, err := ParseExpr(tc.expr)
		if strings.Contains(tc.expr, "it''s") {
			// 'it' then 's': not a string PromQL has; the matcher list breaks.
			if err == nil {
				t.Errorf("%s: accepted", tc.expr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if !reflect.DeepEqual(got.Selectors, tc.want) || !reflect.DeepEqual(got.Grouping, tc.grouping) {
			t.Errorf("%s:\n got %+v %v\nwant %+v %v", tc.expr, got.Selectors, got.Grouping, tc.want, tc.grouping)
		}
	}
	for _, bad := range []string{
		`a{b="c}`, `a{b}`, `a{b="c" d="e"}`, `a{="c"}`, `{job="x"}`, `{__name__=~"sigil_.*"}`,
		`sum by (le x) (y)`, `sum by (1) (x)`, `rate(x[5m)`, `"unterminated`, `x - $`, `b{__name__="a"}`,
	} {
		if e, err := ParseExpr(bad); err == nil {
			t.Errorf("%s: accepted as %+v", bad, e)
		}
	}
}

// TestParseLabelValuesVariable: a variable query names the label it
// lists as one the selector's series must carry.
func TestParseLabelValuesVariable(t *testing.T) {
	e, err := ParseLabelValues(`label_values(sigil_requests_total{destination_service_namespace=~"$namespace"}, destination_service_name)`)
	if err != nil {
		t.Fatal(err)
	}
	want := Expr{Selectors: []Selector{{Metric: "sigil_requests_total", Labels: []string{"destination_service_namespace"}}}, Grouping: []string{"destination_service_name"}}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("got %+v, want %+v", e, want)
	}
	for _, bad := range []string{`query_result(up)`, `label_values(up, le-x)`, `label_values(up, )`, `label_values(up{a=}, b)`} {
		if _, err := ParseLabelValues(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// FuzzParseExpr: no expression crashes the tokenizer, and every metric
// and label it returns is a name.
func FuzzParseExpr(f *testing.F) {
	f.Add(`histogram_quantile(0.99, sum by (le) (rate(m_bucket{a="b"}[$__rate_interval])))`)
	f.Add(`{__name__="x", y!~'z'} offset 5m`)
	f.Add(`a{b="\"}"} / on(c) group_left d`)
	f.Fuzz(func(t *testing.T, expr string) {
		e, err := ParseExpr(expr)
		if err != nil {
			return
		}
		for _, s := range e.Selectors {
			if s.Metric == "" || !isIdentStart(s.Metric[0]) {
				t.Fatalf("%q: metric %q", expr, s.Metric)
			}
			for _, l := range s.Labels {
				if !isLabelName(l) {
					t.Fatalf("%q: label %q", expr, l)
				}
			}
		}
	})
}
