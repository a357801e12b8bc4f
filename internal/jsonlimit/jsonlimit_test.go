package jsonlimit

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// repeat is an endless stream of one byte.
type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestReaderBoundsOneValue(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   io.Reader
		max  int64
		want int // values decoded before the end or the error
		err  error
	}{
		{"small values", strings.NewReader(`["a","b","c"]`), 16, 3, nil},
		{"values just under the bound, many of them", strings.NewReader("[" + strings.Repeat(`"`+strings.Repeat("x", 1000)+`",`, 200) + `"end"]`), 1002, 201, nil},
		{"an endless value", io.MultiReader(strings.NewReader(`["a","`), repeat('x')), 1 << 20, 1, ErrTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lr := NewReader(tt.in)
			dec := json.NewDecoder(lr)
			if _, err := dec.Token(); err != nil {
				t.Fatal(err)
			}
			n := 0
			var err error
			for dec.More() {
				lr.Allow(dec.InputOffset(), tt.max)
				var v json.RawMessage
				if err = dec.Decode(&v); err != nil {
					break
				}
				n++
			}
			if n != tt.want || !errors.Is(err, tt.err) {
				t.Fatalf("%d values, err %v; want %d, %v", n, err, tt.want, tt.err)
			}
		})
	}
}
