package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzCheck: Check never panics on any trail, and a trail it accepts is
// exactly the records re-sealed, byte for byte (nothing added, nothing
// re-encoded).
func FuzzCheck(f *testing.F) {
	path := filepath.Join(f.TempDir(), "audit.log")
	l, err := Open(path, fixedNow)
	if err != nil {
		f.Fatal(err)
	}
	if err := l.Append(Event{Type: TokenCreated, Actor: "admin", Details: map[string]string{"node": "n1"}}, Event{Type: EntryCreated, Subject: "spiffe://td/x"}); err != nil {
		f.Fatal(err)
	}
	l.Close()
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add(append(bytes.TrimSuffix(good, []byte("\n")), " {}\n"...))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var events []Event
		if _, err := scan(bytes.NewReader(data), func(e Event) { events = append(events, e) }); err != nil {
			return
		}
		var again []byte
		for _, e := range events {
			_, line, err := seal(e)
			if err != nil {
				t.Fatal(err)
			}
			again = append(again, line...)
			again = append(again, '\n')
		}
		if !bytes.Equal(again, data) && !bytes.Equal(again, append(bytes.Clone(data), '\n')) {
			t.Fatalf("accepted %q, which is not the sealed records %q", data, again)
		}
	})
}
