package server

import (
	"errors"
	"net/http/httptest"
	"testing"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/tap"
)

// Whatever query string an admin sends to GET /v1/tap, tapControl refuses
// it with a 400 or returns a control within package tap's bounds.
func FuzzTapQuery(f *testing.F) {
	f.Add("service=api")
	f.Add("service=api&namespace=prod&path=/v1&method=GET&max=10000&rate=1000")
	f.Add("service=api&max=4294967296&rate=-1")
	f.Add("service=%ZZ&path=v1")
	f.Fuzz(func(t *testing.T, query string) {
		r := httptest.NewRequest("GET", "/v1/tap", nil)
		r.URL.RawQuery = query
		c, err := tapControl(r)
		if err != nil {
			var apiErr *adminv1.APIError
			if !errors.As(err, &apiErr) || apiErr.Status != 400 {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if err := tap.CheckControl(c); err != nil {
			t.Fatalf("control out of bounds: %v", err)
		}
	})
}
