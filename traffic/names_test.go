package traffic

import (
	"strings"
	"testing"
)

// Names are Kubernetes': metadata.name a DNS-1123 subdomain (253),
// metadata.namespace a DNS-1123 label (63). A refusal names the resource,
// the field and the rule, and never echoes a control character or a
// huge name.
func TestResourceNameValidationParse(t *testing.T) {
	doc := func(meta string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n" + meta + "spec:\n  hosts: [api]\n  http:\n  - route:\n    - destination: {host: api}\n"
	}
	long := strings.Repeat("a", 200<<10)
	tests := []struct {
		name, meta string
		want       []string // empty: accepted
	}{
		{"plain", "  name: api\n", nil},
		{"dotted", "  name: api.v1-canary\n  namespace: team-a\n", nil},
		{"253", "  name: " + strings.Repeat("a.", 126) + "a\n", nil},
		{"dot dot slash", "  name: ../../etc\n", []string{"VirtualService", "metadata.name", `"../../etc"`, "RFC 1123 subdomain"}},
		{"slash", "  name: a/b\n", []string{"metadata.name", `"a/b"`}},
		{"upper case", "  name: API\n", []string{"metadata.name"}},
		{"newline", "  name: \"a\\nb\"\n", []string{"metadata.name", `"a\nb"`}},
		{"terminal title escape", "  name: \"\\e]0;pwned\\a\"\n", []string{"metadata.name", `"\x1b]0;pwned\a"`}},
		{"C1 control", "  name: \"a\\u009bb\"\n", []string{"metadata.name", `\u009b`}},
		{"254", "  name: " + strings.Repeat("a", 254) + "\n", []string{"metadata.name", "(254 bytes)"}},
		{"200 KB", "  name: " + long + "\n", []string{"metadata.name", "(204800 bytes)"}},
		{"label over 63", "  name: " + strings.Repeat("a", 64) + "\n", []string{"metadata.name"}},
		{"namespace slash", "  name: api\n  namespace: ../kube-system\n", []string{"VirtualService \"api\"", "metadata.namespace", "RFC 1123 label"}},
		{"namespace with a dot", "  name: api\n  namespace: a.b\n", []string{"metadata.namespace"}},
		{"namespace 64", "  name: api\n  namespace: " + strings.Repeat("n", 64) + "\n", []string{"metadata.namespace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(doc(tt.meta)), "names.yaml")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if strings.ContainsAny(msg, "\x1b\x07\n") || len(msg) > 1024 {
				t.Errorf("error carries a control character or is %d bytes long: %q", len(msg), msg)
			}
		})
	}
}

// Input that is not UTF-8 is refused with the file, line and byte offset
// of the first bad byte, never rewritten to U+FFFD.
func TestNonUTF8RefusedParse(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string // empty: accepted
	}{
		{"utf-8", "# héllo ✓\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec: {hosts: [api], http: [{route: [{destination: {host: api}}]}]}\n", ""},
		{"latin-1 in a comment", "# h\xe9llo\n", "f.yaml: line 1, byte offset 3: byte 0xe9"},
		{"bad byte in a name", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ap\xffi}\n", "line 3, byte offset 75: byte 0xff"},
		{"truncated rune at the end", "a: \xe2\x9c", "byte offset 3: byte 0xe2"},
		{"overlong encoding", "a: \xc0\xaf", "byte offset 3: byte 0xc0"},
		{"surrogate", "a: \xed\xa0\x80", "byte offset 3: byte 0xed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckUTF8([]byte(tt.data), "f.yaml")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Parse([]byte(tt.data), "f.yaml"); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
			if _, err := Parse([]byte(tt.data), "f.yaml"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse: err %v, want %q", err, tt.want)
			}
		})
	}
}

// TestNonFiniteNumberRefusedParse: YAML's .nan and .inf have no JSON form;
// the refusal says which value and what to write instead, not that the
// document is not YAML.
func TestNonFiniteNumberRefusedParse(t *testing.T) {
	for _, v := range []string{".nan", ".inf", "-.Inf"} {
		doc := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: api}\nspec:\n  hosts: [api]\n  http:\n  - fault: {abort: {httpStatus: 503, percentage: {value: " + v + "}}}\n    route:\n    - destination: {host: api}\n"
		_, err := Parse([]byte(doc), "f.yaml")
		if err == nil || !strings.Contains(err.Error(), "not a finite number") || strings.Contains(err.Error(), "not YAML") {
			t.Errorf("%s: %v, want a refusal naming a number that is not finite", v, err)
		}
	}
}
