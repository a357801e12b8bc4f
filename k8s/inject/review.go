package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
)

// Path is where the webhook is served (the webhook configuration's
// clientConfig path).
const Path = "/inject"

// MaxReviewBytes bounds an AdmissionReview's body: the API server's own
// default request-body limit (--max-request-body-bytes, 3 MiB), which no
// Pod it stored can exceed.
const MaxReviewBytes = 3 << 20

// The AdmissionReview this webhook speaks (admissionReviewVersions: [v1]).
const (
	reviewAPIVersion = "admission.k8s.io/v1"
	reviewKind       = "AdmissionReview"
)

var (
	podKind        = metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}
	typeMetaReview = metav1.TypeMeta{APIVersion: reviewAPIVersion, Kind: reviewKind}
)

// DecodeReview reads an AdmissionReview (admission.k8s.io/v1) strictly:
// case-sensitive field names, no field twice, no field the type does not
// have; a request with a uid for a Pod. The Pod inside is not read here
// (see decodePod). Errors name what was wrong.
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var r admissionv1.AdmissionReview
	strict, err := kjson.UnmarshalStrict(body, &r)
	if err != nil {
		return nil, fmt.Errorf("inject: admission review: %w", err)
	}
	if err := errors.Join(strict...); err != nil {
		return nil, fmt.Errorf("inject: admission review: %w", err)
	}
	if r.APIVersion != reviewAPIVersion || r.Kind != reviewKind {
		return nil, fmt.Errorf("inject: admission review: apiVersion %q kind %q, want %s %s", r.APIVersion, r.Kind, reviewAPIVersion, reviewKind)
	}
	if r.Request == nil {
		return nil, errors.New("inject: admission review: no request")
	}
	if r.Request.UID == "" {
		return nil, errors.New("inject: admission review: request without uid")
	}
	if r.Response != nil {
		return nil, errors.New("inject: admission review: a request carries no response")
	}
	return &r, nil
}

// decodePod reads the Pod of a request case-sensitively and refuses a
// field given twice. Unknown fields are let through: the API server has
// validated the Pod against its own (maybe newer) schema, and the patch
// only adds to it, so a field this build does not know is carried along
// untouched rather than failing every Pod of a newer cluster.
func decodePod(raw []byte) (*corev1.Pod, error) {
	if len(raw) == 0 {
		return nil, errors.New("inject: request has no object")
	}
	var pod corev1.Pod
	strict, err := kjson.UnmarshalStrict(raw, &pod, kjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("inject: pod: %w", err)
	}
	if err := errors.Join(strict...); err != nil {
		return nil, fmt.Errorf("inject: pod: %w", err)
	}
	if pod.Kind != "" && (pod.APIVersion != "v1" || pod.Kind != "Pod") {
		return nil, fmt.Errorf("inject: object is %s %s, want v1 Pod", pod.APIVersion, pod.Kind)
	}
	return &pod, nil
}

// review answers one admission request: the patch that injects the Pod,
// an allowance without patch when the Pod is not to be injected, or a
// refusal naming what was wrong (fail closed).
func (i *Injector) review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID}
	deny := func(err error) *admissionv1.AdmissionResponse {
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest, Message: err.Error()}
		i.results.WithLabelValues(resultRefused).Inc()
		i.log.Warn("pod refused by the sidecar injector", "namespace", req.Namespace, "pod", req.Name, "error", err)
		return resp
	}
	if req.Kind != podKind || req.Resource.Resource != "pods" || req.SubResource != "" {
		return deny(fmt.Errorf("inject: this webhook mutates pods only, not %s %s", req.Kind.String(), req.Resource.Resource))
	}
	if req.Operation != admissionv1.Create {
		// Init containers are immutable after creation.
		i.results.WithLabelValues(resultSkipped).Inc()
		resp.Allowed = true
		return resp
	}
	pod, err := decodePod(req.Object.Raw)
	if err != nil {
		return deny(err)
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	if ns == "" {
		return deny(errors.New("inject: request names no namespace"))
	}
	v, err := i.decide(ctx, ns, pod)
	if err != nil {
		return deny(err)
	}
	if !v.inject {
		i.results.WithLabelValues(resultSkipped).Inc()
		i.log.Info("pod not injected", "namespace", ns, "pod", req.Name, "reason", v.reason)
		resp.Allowed = true
		return resp
	}
	patch, err := i.mutation(ns, pod)
	if err != nil {
		return deny(err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Allowed, resp.Patch, resp.PatchType = true, patch, &pt
	i.results.WithLabelValues(resultInjected).Inc()
	i.log.Info("sidecar injected", "namespace", ns, "pod", req.Name, "reason", v.reason)
	return resp
}

// ServeHTTP is the webhook: POST Path with an AdmissionReview (JSON, at
// most MaxReviewBytes) answered with an AdmissionReview. A body that is
// not a well-formed review gets a 4xx, which the API server counts as a
// failed call (refused under failurePolicy Fail).
func (i *Injector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) {
		i.results.WithLabelValues(resultRefused).Inc()
		i.log.Warn("malformed admission review", "status", code, "error", msg)
		http.Error(w, msg, code)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, "inject: POST an AdmissionReview")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		fail(http.StatusUnsupportedMediaType, "inject: Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("inject: admission review over %d bytes", MaxReviewBytes))
			return
		}
		fail(http.StatusBadRequest, "inject: reading the admission review: "+err.Error())
		return
	}
	rev, err := DecodeReview(body)
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	out := admissionv1.AdmissionReview{TypeMeta: typeMetaReview, Response: i.review(r.Context(), rev.Request)}
	raw, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "inject: encoding the response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(raw)
}
