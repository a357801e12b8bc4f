package hop

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
)

func TestHopByHopCannotRemoveSidecarHeadersUnit(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   http.Header
		want http.Header
		err  bool
	}{
		{"no Connection", http.Header{"X-A": {"1"}}, http.Header{"X-A": {"1"}}, false},
		{"names a custom header", http.Header{"Connection": {"X-A, close"}, "X-A": {"1"}, "X-B": {"2"}}, http.Header{"Connection": {"Close"}, "X-B": {"2"}}, false},
		{"keeps standard options", http.Header{"Connection": {"keep-alive, Upgrade", "te"}, "Upgrade": {"websocket"}, "Te": {"trailers"}}, http.Header{"Connection": {"Keep-Alive, Upgrade, Te"}, "Upgrade": {"websocket"}, "Te": {"trailers"}}, false},
		{"self and empty options", http.Header{"Connection": {"Connection, , http2-settings"}, "Http2-Settings": {"x"}}, http.Header{}, false},
		{"XFCC", http.Header{"Connection": {"x-forwarded-client-cert"}}, nil, true},
		{"traceparent", http.Header{"Connection": {"close, Traceparent"}}, nil, true},
		{"tracestate", http.Header{"Connection": {"tracestate"}}, nil, true},
		{"request id", http.Header{"Connection": {"X-Request-ID"}}, nil, true},
		{"host", http.Header{"Connection": {"host"}}, nil, true},
		{"content length", http.Header{"Connection": {"Content-Length"}}, nil, true},
		{"content type", http.Header{"Connection": {"content-type"}}, nil, true},
		{"forwarded for", http.Header{"Connection": {"X-Forwarded-For"}}, nil, true},
		{"grpc timeout", http.Header{"Connection": {"grpc-timeout"}}, nil, true},
	} {
		h := tt.in.Clone()
		err := TakeConnectionOptions(h)
		if tt.err {
			if !errors.Is(err, ErrConnectionOption) {
				t.Errorf("%s: %v, want refused", tt.name, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(h, tt.want) {
			t.Errorf("%s: %v %v, want %v", tt.name, h, err, tt.want)
		}
	}

	// Forged identity headers, however spelled, are gone.
	h := http.Header{XFCC: {"URI=evil"}, "x-forwarded-client-cert": {"evil"}, "X_Forwarded_Client_Cert": {"evil"}, "X-Forwarded-Client_cert": {"evil"}, "X-Forwarded-Client-Certs": {"keep"}, "X-Other": {"keep"}}
	DropForgedIdentity(h)
	if !reflect.DeepEqual(h, http.Header{"X-Forwarded-Client-Certs": {"keep"}, "X-Other": {"keep"}}) {
		t.Errorf("after DropForgedIdentity: %v", h)
	}

	// A response's Connection header removes what it names but never a
	// protected header.
	resp := http.Header{"Connection": {"X-Private, Grpc-Status, content-length"}, "X-Private": {"1"}, "Grpc-Status": {"0"}, "Content-Length": {"2"}}
	RemoveHeaders(resp)
	if !reflect.DeepEqual(resp, http.Header{"Grpc-Status": {"0"}, "Content-Length": {"2"}}) {
		t.Errorf("response after RemoveHeaders: %v", resp)
	}
}
