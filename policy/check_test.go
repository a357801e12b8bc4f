package policy

import (
	"context"
	"strings"
	"testing"
)

const checkPkg = "package sigil.authz\n\ndefault allow := false\n\n"

// check runs Check on one policy file (and tests, if given) and returns
// its findings as strings.
func check(t *testing.T, src, test string) []string {
	t.Helper()
	tests := map[string]string{}
	if test != "" {
		tests["p/authz_test.rego"] = test
	}
	fs, err := Check(context.Background(), map[string]string{"p/authz.rego": src}, tests)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Kind + " " + f.String()
	}
	return out
}

// matchFindings fails unless each of want is in some finding of got and
// each finding has one of want.
func matchFindings(t *testing.T, got, want []string) {
	t.Helper()
	matched := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if strings.Contains(g, w) {
				matched[i], found = true, true
			}
		}
		if !found {
			t.Errorf("no finding %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
	for i, g := range got {
		if !matched[i] {
			t.Errorf("unexpected finding: %s", g)
		}
	}
}

// A reference to a field the input document does not have is undefined on
// every request (the rule reading it silently never applies): Check names
// it with its place and the nearest valid field, at every level and
// wherever the reference is written; the maps with free keys (headers,
// query) accept any key.
func TestPolicyCheckInputReferences(t *testing.T) {
	tests := []struct {
		name string
		body string // allow's body
		want []string
	}{
		{"typo at the top", `input.sourc.principal == "x"`, []string{`input p/authz.rego:6:2: input.sourc is not in Sigil's input document (docs/policy-input.md); did you mean input.source?`}},
		{"typo in a field", `input.request.methd == "GET"`, []string{`p/authz.rego:6:2: input.request.methd is not in Sigil's input document (docs/policy-input.md); did you mean input.request.method?`}},
		{"typo in source", `input.source.principl == "x"`, []string{"did you mean input.source.principal?"}},
		{"typo in connection", `input.connection.tls == "x"`, []string{"input.connection.tls is not in"}},
		{"nothing near", `input.request.zzzzzzzzzz == "x"`, []string{"; input.request has: method, path, url_path, query, host, headers, protocol"}},
		{"bracket form", `input.request["methd"] == "GET"`, []string{"input.request.methd is not in", "did you mean input.request.method?"}},
		{"nested in another ref", `data.sigil.authz.roles[input.request.methd]`, []string{"6:25: input.request.methd is not in"}},
		{"through some", `some k, v in input.request.headrs` + "\n\tk == v", []string{"6:15: input.request.headrs is not in"}},
		{"through every", `every v in input.request.qery { v != "" }`, []string{"6:13: input.request.qery is not in"}},
		{"in a comprehension", `count([x | some x in input.destination.prot]) > 0`, []string{"input.destination.prot is not in", "did you mean input.destination.port?"}},
		{"below a string", `input.request.method.name == "x"`, []string{"input.request.method.name is not in Sigil's input document (docs/policy-input.md): input.request.method is a string"}},
		{"index of an object", `input.request[0] == "x"`, []string{"input.request[0] is not in", "not an array"}},
		{"header with capitals", `input.request.headers["X-User"] == "x"`, []string{`input.request.headers["X-User"] is never present`, `did you mean input.request.headers["x-user"]?`}},
		{"below a header value", `input.request.headers.a.b == "x"`, []string{"input.request.headers.a is a string"}},
		{"query value by name", `input.request.query.x.y == "x"`, []string{"indexed by number"}},
		{"destination.namespace", `input.destination.namespace == "demo"`, nil},
		{"any header", `input.request.headers.anything == "x"`, nil},
		{"any query name", `input.request.query.x[0] == "1"`, nil},
		{"computed key", `some k` + "\n\t" + `input.request[k] == "x"`, nil},
		{"input as a whole", `x := input` + "\n\t" + `x.request.method == "GET"`, nil},
		{"every field", `input.source.namespace == input.source.service_account` + "\n\t" +
			`input.destination.port == 8080` + "\n\t" + `input.connection.tls_version == "TLSv1.3"` + "\n\t" +
			`input.request.url_path == input.request.path` + "\n\t" + `input.request.host == input.destination.service` + "\n\t" +
			`input.request.protocol == "grpc"` + "\n\t" + `input.destination.principal != input.source.principal`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := checkPkg + "allow if {\n\t" + tt.body + "\n}\n\nroles := {\"GET\": true}\n"
			if !strings.Contains(tt.body, "roles") {
				src = checkPkg + "allow if {\n\t" + tt.body + "\n}\n"
			}
			matchFindings(t, check(t, src, ""), tt.want)
		})
	}
}

// Imports are resolved: `import input.request` then `request.methd` is
// input.request.methd, and the import itself is checked.
func TestPolicyCheckInputReferencesThroughImports(t *testing.T) {
	src := "package sigil.authz\n\nimport input.request\nimport input.sorce\n\ndefault allow := false\n\nallow if {\n\trequest.methd == \"GET\"\n\tsorce.principal == \"x\"\n}\n"
	matchFindings(t, check(t, src, ""), []string{
		"p/authz.rego:4:8: input.sorce is not in",
		"p/authz.rego:9:2: input.request.methd is not in",
		"p/authz.rego:10:2: input.sorce is not in",
	})
}

// Sigil loads no data documents, only modules: a reference under data
// that no rule defines (a typo in a rule or package name) is undefined on
// every request, the same fault as a typo under input.
func TestPolicyCheckDataReferences(t *testing.T) {
	roles := "package sigil.roles\n\nreader contains \"web\"\n\nok(x) if x == 1\n"
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"typo in a rule", `data.sigil.roles.redaer[input.source.service_account]`, []string{"data p/authz.rego:8:2: data.sigil.roles.redaer is not defined by any rule (Sigil loads no data documents, so it is undefined on every request); did you mean data.sigil.roles.reader?"}},
		{"typo through an import", `roles.redaer[input.source.service_account]`, []string{"data.sigil.roles.redaer is not defined", "did you mean data.sigil.roles.reader?"}},
		{"typo in a package", `data.sigil.rols.reader[input.source.service_account]`, []string{"data.sigil.rols is not defined", "did you mean data.sigil.roles?"}},
		{"typo in this package", `data.sigil.authz.admn`, []string{"data.sigil.authz.admn is not defined"}},
		{"a rule's value", `data.sigil.roles.reader[input.source.service_account]`, nil},
		{"a function", `data.sigil.roles.ok(1)`, nil},
		{"a package", `is_object(data.sigil.roles)`, nil},
		{"a computed key", `some p` + "\n\t" + `data.sigil[p].reader.web`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "package sigil.authz\n\nimport data.sigil.roles\n\ndefault allow := false\n\nallow if {\n\t" + tt.body + "\n\troles.reader.web\n}\n"
			fs, err := Check(context.Background(), map[string]string{"p/authz.rego": src, "p/roles.rego": roles}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range fs {
				if f.Kind != KindUnused {
					got = append(got, f.Kind+" "+f.String())
				}
			}
			matchFindings(t, got, tt.want)
		})
	}
}

// In a test, `with input as {...}` and `with input.x as` give the policy an
// input: not a read, so not an error; a with target outside the document
// is a warning (the test sets what the sidecar never sends).
func TestPolicyCheckWithInTests(t *testing.T) {
	src := checkPkg + "allow if input.request.method == \"GET\"\n"
	test := "package sigil.authz_test\n\nimport data.sigil.authz\n\n" +
		"test_whole if authz.allow with input as {\"request\": {\"method\": \"GET\"}}\n\n" +
		"test_field if authz.allow with input.request.method as \"GET\"\n\n" +
		"test_typo if not authz.allow with input.request.methd as \"GET\"\n"
	matchFindings(t, check(t, src, test), []string{
		"input p/authz_test.rego:9:35: warning: with sets what the sidecar never has: input.request.methd is not in",
	})
}

// OPA's strict mode: its errors are Check's errors, in the policy and in
// its tests, with their places.
func TestPolicyCheckStrictMode(t *testing.T) {
	tests := []struct {
		name, src, test string
		want            []string
	}{
		{"unused local", checkPkg + "allow if {\n\tx := input.request.method\n\tinput.request.path == \"/\"\n}\n", "", []string{"strict p/authz.rego:6:2: assigned var x unused (OPA strict mode)"}},
		{"unused import", "package sigil.authz\n\nimport data.other\n\ndefault allow := false\n", "", []string{"strict p/authz.rego:3:1: import data.other unused (OPA strict mode)"}},
		{"unused argument", checkPkg + "allow if f(1)\n\nf(x) := true\n", "", []string{"strict p/authz.rego:7:1: unused argument x"}},
		{"in a test", checkPkg + "allow if input.request.method == \"GET\"\n",
			"package sigil.authz_test\n\nimport data.sigil.authz\n\ntest_x if {\n\ty := 1\n\tauthz.allow with input.request.method as \"GET\"\n}\n",
			[]string{"strict p/authz_test.rego:6:2: assigned var y unused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			matchFindings(t, check(t, tt.src, tt.test), tt.want)
		})
	}
}

// Lint: rules allow never uses and rule bodies that can never be true are
// warnings, at the rule's or the expression's place.
func TestPolicyCheckLint(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"unused rule", checkPkg + "allow if input.request.method == \"GET\"\n\nadmin if input.source.namespace == \"ops\"\n",
			[]string{"unused-rule p/authz.rego:7:1: warning: data.sigil.authz.admin is never used: data.sigil.authz.allow does not depend on it"}},
		{"used through a helper and a function", checkPkg + "allow if { web; ok(input.request.method) }\n\nweb if input.source.service_account == \"web\"\n\nok(m) if m == \"GET\"\n", nil},
		{"unused rule in another package", checkPkg + "allow if input.request.method == \"GET\"\n", nil},
		{"lower-case method", checkPkg + "allow if input.request.method == \"get\"\n",
			[]string{`never-true p/authz.rego:5:10: warning: data.sigil.authz.allow can never be true: input.request.method is upper-case, never "get" (did you mean "GET"?)`}},
		{"method on the right", checkPkg + "allow if \"post\" = input.request.method\n", []string{"input.request.method is upper-case"}},
		{"unknown protocol", checkPkg + "allow if input.request.protocol == \"https\"\n", []string{`input.request.protocol is one of http, grpc, tcp, never "https"`}},
		{"unknown tls version", checkPkg + "allow if input.connection.tls_version == \"TLSv1.2\"\n", []string{"input.connection.tls_version is one of TLSv1.3"}},
		{"port as a string", checkPkg + "allow if input.destination.port == \"8080\"\n", []string{`input.destination.port is a number, never "8080"`}},
		{"two values for one field", checkPkg + "allow if {\n\tinput.request.method == \"GET\"\n\tinput.request.method == \"POST\"\n}\n",
			[]string{`p/authz.rego:7:2: warning: data.sigil.authz.allow can never be true: input.request.method must equal both "GET" and "POST"`}},
		{"method in lower-case set", checkPkg + "allow if input.request.method in {\"get\", \"head\"}\n", []string{`input.request.method is in {"get", "head"}, which holds no value it can have: input.request.method is upper-case, never "get"`}},
		{"protocol in an array", checkPkg + "allow if input.request.protocol in [\"http2\"]\n", []string{`input.request.protocol is one of http, grpc, tcp, never "http2"`}},
		{"one good value in the set is fine", checkPkg + "allow if input.request.method in {\"get\", \"GET\"}\n", nil},
		{"through a local", checkPkg + "allow if {\n\tm := input.request.method\n\tm == \"get\"\n}\n", []string{`input.request.method is upper-case, never "get"`}},
		{"constant false", checkPkg + "allow if {\n\tinput.request.method == \"GET\"\n\tfalse\n}\n", []string{"7:2: warning: data.sigil.authz.allow can never be true: it has the expression false"}},
		{"constants that differ", checkPkg + "allow if { 1 == 2 }\n", []string{"can never be true: 1 == 2 is always false"}},
		{"constant order", checkPkg + "allow if { 3 < 2 }\n", []string{"3 < 2 is always false"}},
		{"in a helper", checkPkg + "allow if admin\n\nadmin if input.request.method == \"delete\"\n", []string{"data.sigil.authz.admin can never be true"}},
		{"negated is fine", checkPkg + "allow if {\n\tinput.request.method == \"GET\"\n\tnot input.request.protocol == \"tcp\"\n\tnot false\n}\n", nil},
		{"one value twice is fine", checkPkg + "allow if {\n\tinput.request.method == \"GET\"\n\tinput.request.method == \"GET\"\n}\n", nil},
		{"two values in two rules", checkPkg + "allow if input.request.method == \"GET\"\n\nallow if input.request.method == \"HEAD\"\n", nil},
		{"constants that hold", checkPkg + "allow if { 1 < 2; input.request.method == \"GET\" }\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			matchFindings(t, check(t, tt.src, ""), tt.want)
		})
	}
}

// Unused rules are found through every package allow reads, by OPA's
// rule dependency graph: a helper package's rule allow uses (through an
// import, an else chain or a function) is used; one it never reaches is
// not, in whichever package it is.
func TestPolicyCheckUnusedRulesAcrossPackages(t *testing.T) {
	authz := "package sigil.authz\n\nimport data.sigil.roles\n\ndefault allow := false\n\nallow if roles.level(input.source.service_account) > 1\n"
	roles := "package sigil.roles\n\nlevel(sa) := 2 if {\n\tsa == \"web\"\n} else := n if {\n\tn := base\n}\n\nbase := 1\n\nadmins contains \"ops\"\n"
	fs, err := Check(context.Background(), map[string]string{"p/authz.rego": authz, "p/roles.rego": roles}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.Kind+" "+f.String())
	}
	matchFindings(t, got, []string{"unused-rule p/roles.rego:11:1: warning: data.sigil.roles.admins is never used"})
}

// Test files are not linted: a helper only tests use is not reported, nor
// are test rules, which allow never uses.
func TestPolicyCheckLintSkipsTests(t *testing.T) {
	src := checkPkg + "allow if input.request.method == \"GET\"\n"
	test := "package sigil.authz_test\n\nimport data.sigil.authz\n\nget := {\"request\": {\"method\": \"GET\"}}\n\ntest_get if authz.allow with input as get\n"
	matchFindings(t, check(t, src, test), nil)
}

// A policy that does not compile, or that the sidecar would refuse, is an
// error of Check itself, as of Compile.
func TestPolicyCheckCompilesAsTheSidecar(t *testing.T) {
	for name, src := range map[string]string{
		"unsafe":   checkPkg + "allow if { x }\n",
		"no allow": "package sigil.authz\n\npermit := true\n",
		"syntax":   "package sigil.authz\n\nallow if {\n",
	} {
		if _, err := Check(context.Background(), map[string]string{"p.rego": src}, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Check(context.Background(), map[string]string{"p.rego": checkPkg}, map[string]string{"p_test.rego": "package x\n\ntest_a if {\n"}); err == nil {
		t.Error("a test file that does not parse: accepted")
	}
}

// Check reads modules a user wrote: whatever the source, it returns
// findings or an error, never panics.
func FuzzCheckModule(f *testing.F) {
	f.Add(checkPkg + "allow if input.request.methd == \"GET\"\n")
	f.Add(checkPkg + "allow if { some k, v in input.request.headers; k == v }\n")
	f.Add(checkPkg + "allow if { every x in input.request.query.a { x != \"\" } }\n")
	f.Add("package sigil.authz\n\nimport input.request\n\nallow if request[0].x == 1\n")
	f.Add(checkPkg + "allow if { input.request.method == \"get\"; 1 == 2; false }\n\nunused := 1\n")
	f.Add(checkPkg + "allow if input[input.request.method][\"a\"][1] == input.destination.port\n")
	f.Add(checkPkg + "allow if { x := input; x.a }\n")
	f.Add(checkPkg + "allow if { r := input.request; r.methd == \"GET\"; r.headers.x == r.query.y[0] }\n")
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 1<<12 {
			return
		}
		fs, err := Check(context.Background(), map[string]string{"p.rego": src}, nil)
		if err == nil {
			for _, f := range fs {
				_ = f.String()
			}
		}
	})
}

// A field read through a variable (r := input.request; r.methd) is as
// undefined as input.request.methd: the input document is given to OPA's
// type checker as a JSON schema, which follows the variable, and the
// reference is named with its place and the nearest field.
func TestPolicyCheckInputReferencesThroughVariables(t *testing.T) {
	for _, tt := range []struct {
		name string
		body string
		want []string
	}{
		{"a typo through a variable", "r := input.request\n\tr.methd == \"GET\"", []string{`input p/authz.rego:7:2: r.methd is not in Sigil's input document (docs/policy-input.md): no field methd there; did you mean method?`}},
		{"two levels", "x := input\n\tx.source.principl == \"a\"", []string{"x.source.principl is not in", "did you mean principal?"}},
		{"through a header map", "h := input.request.headers\n\th.anything == \"a\"", nil},
		{"fields that are there", "r := input.request\n\tr.method == \"GET\"\n\tr.query.a[0] == \"b\"", nil},
		{"a typo written out is named once", `input.request.methd == "GET"`, []string{"input.request.methd is not in"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			matchFindings(t, check(t, checkPkg+"allow if {\n\t"+tt.body+"\n}\n", ""), tt.want)
		})
	}
}
