package inject

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
)

func reviewBody(t testing.TB, req *admissionv1.AdmissionRequest) []byte {
	t.Helper()
	raw, err := json.Marshal(admissionv1.AdmissionReview{TypeMeta: typeMetaReview, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestWebhookHTTP: the handler answers a well-formed review with a review
// echoing its uid, and turns away anything else with a 4xx naming why
// (a failed call, which failurePolicy Fail turns into a refusal).
func TestWebhookHTTP(t *testing.T) {
	inj := newTestInjector(t)
	good := reviewBody(t, request(t, newPod("meshed")))
	refused := 0
	for _, tc := range []struct {
		name        string
		method      string
		contentType string
		body        []byte
		status      int
		want        string
	}{
		{"injects", http.MethodPost, "application/json", good, http.StatusOK, `"uid":"uid-1"`},
		{"charset allowed", http.MethodPost, "application/json; charset=utf-8", good, http.StatusOK, `"patchType":"JSONPatch"`},
		{"get", http.MethodGet, "application/json", nil, http.StatusMethodNotAllowed, "POST"},
		{"yaml", http.MethodPost, "application/yaml", good, http.StatusUnsupportedMediaType, "application/json"},
		{"too big", http.MethodPost, "application/json", bytes.Repeat([]byte(" "), MaxReviewBytes+1), http.StatusRequestEntityTooLarge, "over"},
		{"not json", http.MethodPost, "application/json", []byte("{"), http.StatusBadRequest, "admission review"},
		{"unknown field", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","requets":{}}`), http.StatusBadRequest, "unknown field"},
		{"field case", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","Kind":"AdmissionReview"}`), http.StatusBadRequest, "unknown field"},
		{"duplicate field", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","kind":"AdmissionReview"}`), http.StatusBadRequest, "duplicate field"},
		{"v1beta1", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`), http.StatusBadRequest, "want admission.k8s.io/v1"},
		{"no request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest, "no request"},
		{"no uid", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), http.StatusBadRequest, "without uid"},
		{"response in request", http.MethodPost, "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"},"response":{"uid":"x","allowed":true}}`), http.StatusBadRequest, "no response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, Path, bytes.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.contentType)
			w := httptest.NewRecorder()
			inj.ServeHTTP(w, r)
			if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("%d %q, want %d containing %q", w.Code, w.Body.String(), tc.status, tc.want)
			}
			if w.Code != http.StatusOK {
				refused++
				if got := counterValue(t, inj.results.WithLabelValues(resultRefused)); got != float64(refused) {
					t.Fatalf("refused counter %v, want %d", got, refused)
				}
				return
			}
			rev, err := decodeReviewResponse(w.Body.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if !rev.Response.Allowed || rev.Response.Patch == nil {
				t.Fatalf("response %+v", rev.Response)
			}
		})
	}
}

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// decodeReviewResponse reads the handler's answer as the API server does.
func decodeReviewResponse(b []byte) (*admissionv1.AdmissionReview, error) {
	var rev admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &rev); err != nil {
		return nil, err
	}
	return &rev, nil
}

// FuzzDecodeReview: no input panics the decoder or the review behind it,
// and whatever it accepts has a request with a uid that is answered with
// that uid.
func FuzzDecodeReview(f *testing.F) {
	inj := newTestInjector(f)
	f.Add(reviewBody(f, request(f, newPod("meshed"))))
	f.Add(reviewBody(f, request(f, newPod("plain", podLabel(LabelInject, LabelInjectEnabled), initContainers("a")))))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","namespace":"meshed","object":{"metadata":{"labels":{"app":"x"},"annotations":{"sigil.dev/app-port":"99999"}},"spec":{"initContainers":[],"volumes":null}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":null}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rev, err := DecodeReview(b)
		if err != nil {
			return
		}
		if rev.Request == nil || rev.Request.UID == "" {
			t.Fatal("accepted a review without a request uid")
		}
		resp := inj.review(t.Context(), rev.Request)
		if resp.UID != rev.Request.UID {
			t.Fatal("uid not echoed")
		}
		if resp.Patch != nil {
			if !resp.Allowed {
				t.Fatal("patch on a refusal")
			}
			var ops []map[string]any
			if err := json.Unmarshal(resp.Patch, &ops); err != nil || len(ops) == 0 {
				t.Fatalf("patch not a JSON Patch: %v", err)
			}
		}
	})
}
