package naming

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzPort: the port of an authority is 0 exactly when it names none,
// it accepts what Resolver.Authority's port rules accept, and a port it
// returns is the digits after the last colon.
func FuzzPort(f *testing.F) {
	for _, s := range []string{"api", "api:80", "api:8080", "[::1]:443", "[::1]", "api:", "api:0", "api:65536", "api:+80", "a:b:c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		port, err := Port(a)
		if _, serr := splitPort(a); (err == nil) != (serr == nil) {
			t.Fatalf("Port(%q) error %v, splitPort %v", a, err, serr)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) || port != 0 {
				t.Fatalf("Port(%q) = %d, %v", a, port, err)
			}
			return
		}
		if port == 0 {
			return
		}
		if !strings.HasSuffix(a, ":"+strconv.Itoa(int(port))) {
			t.Fatalf("Port(%q) = %d", a, port)
		}
	})
}
