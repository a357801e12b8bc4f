package jsonenc

import (
	"encoding/json"
	"testing"
)

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "<", "é", "\x00", `"`, "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := AppendString(nil, s)
		if !ok {
			return
		}
		want, _ := json.Marshal(s)
		if string(got) != string(want) {
			t.Fatalf("AppendString %s, Marshal %s", got, want)
		}
	})
}
