// Package otlptest reads OTLP/HTTP export requests in tests that stand up
// a receiver (the OTLP logs exporter's tests, the tracing e2e test): the
// protobuf encoding of OTLP/HTTP, gzip'd or not
// (https://opentelemetry.io/docs/specs/otlp/#otlphttp).
package otlptest

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/protobuf/proto"
)

// ReadRequest decodes r, a POST to path with an OTLP/HTTP protobuf body
// (Content-Encoding gzip allowed), into msg (an
// ExportLogsServiceRequest, ExportTraceServiceRequest...). The error says
// what was wrong, for the receiver's 400 answer.
func ReadRequest(r *http.Request, path string, msg proto.Message) error {
	if r.URL.Path != path || r.Header.Get("Content-Type") != "application/x-protobuf" {
		return fmt.Errorf("otlptest: want OTLP/HTTP protobuf (application/x-protobuf) on %s", path)
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return fmt.Errorf("otlptest: %w", err)
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("otlptest: %w", err)
	}
	if err := proto.Unmarshal(raw, msg); err != nil {
		return fmt.Errorf("otlptest: %w", err)
	}
	return nil
}
