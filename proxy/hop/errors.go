package hop

import (
	"io"
	"net/http"

	"github.com/sigil-mesh/sigil/protocol"
)

// WriteError answers in the caller's protocol: gRPC callers get a
// trailers-only response with the matching gRPC status (GRPCFailureStatus:
// DEADLINE_EXCEEDED once their deadline has passed, whatever failed).
func WriteError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if ProtocolOf(r) == protocol.GRPC {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", GRPCFailureStatus(r, code))
		w.Header().Set("Grpc-Message", msg)
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}
