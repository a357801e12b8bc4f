package hop

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestGRPCDeadlineStatusTimeoutHeader(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"1H": time.Hour, "2M": 2 * time.Minute, "3S": 3 * time.Second, "40m": 40 * time.Millisecond,
		"500u": 500 * time.Microsecond, "99999999n": 99999999, "00000001S": time.Second,
		"99999999H": 1<<63 - 1, // beyond a Duration: no deadline worth the name
		"":          -1, "S": -1, "1": -1, "1s": -1, "1x": -1, "-1S": -1, "1.5S": -1, "123456789S": -1, " 1S": -1,
	} {
		got, ok := grpcTimeout(http.Header{"Grpc-Timeout": {v}})
		if want < 0 && ok || want >= 0 && (!ok || got != want) {
			t.Errorf("grpc-timeout %q = %v, %v; want %v", v, got, ok, want)
		}
	}
}

func TestGRPCDeadlineStatusMapping(t *testing.T) {
	grpcReq := func(ctx context.Context) *http.Request {
		r := httptest.NewRequest("POST", "/pkg.Svc/M", nil).WithContext(ctx)
		r.Header.Set("Content-Type", "application/grpc")
		return r
	}
	expired, cancel1 := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel1()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	live := context.Background()
	for _, tt := range []struct {
		name string
		ctx  context.Context
		code int
		want string
	}{
		{"deadline passed, upstream failed", expired, http.StatusServiceUnavailable, grpcDeadlineExceeded},
		{"deadline passed, app unreachable", expired, http.StatusBadGateway, grpcDeadlineExceeded},
		{"deadline passed, denied", expired, http.StatusForbidden, grpcDeadlineExceeded},
		{"caller cancelled", cancelled, http.StatusServiceUnavailable, grpcCancelled},
		{"route timeout", live, http.StatusGatewayTimeout, grpcDeadlineExceeded},
		{"denied", live, http.StatusForbidden, grpcPermissionDenied},
		{"malformed", live, http.StatusBadRequest, grpcInternal},
		{"upstream failed", live, http.StatusServiceUnavailable, grpcUnavailable},
	} {
		r := grpcReq(tt.ctx)
		if got := GRPCFailureStatus(r, tt.code); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
		w := httptest.NewRecorder()
		WriteError(w, r, tt.code, "x")
		if got := w.Header().Get("Grpc-Status"); got != tt.want || w.Code != http.StatusOK {
			t.Errorf("%s: WriteError gave %d grpc-status %s, want %s", tt.name, w.Code, got, tt.want)
		}
	}

	// The deadline counts from arrival.
	r := grpcReq(live)
	r.Header.Set("Grpc-Timeout", "50m")
	arrived := time.Now().Add(-time.Second)
	r2, cancel := WithGRPCDeadline(r, arrived)
	defer cancel()
	if dl, ok := r2.Context().Deadline(); !ok || !dl.Equal(arrived.Add(50*time.Millisecond)) || r2.Context().Err() == nil {
		t.Errorf("deadline %v %v, err %v", dl, ok, r2.Context().Err())
	}
	if r3, _ := WithGRPCDeadline(grpcReq(live), arrived); r3.Context() != live {
		t.Error("a request without grpc-timeout got a deadline")
	}
}

func FuzzGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1S", "99999999H", "40m", "1x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := grpcTimeout(http.Header{"Grpc-Timeout": {v}})
		if ok && (d < 0 || len(v) > maxGRPCTimeoutDigits+1) {
			t.Fatalf("grpc-timeout %q = %v", v, d)
		}
	})
}
