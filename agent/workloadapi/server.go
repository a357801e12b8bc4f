// Package workloadapi serves the SPIFFE Workload API on a Unix socket, as
// the specification defines it, so that any Workload API client (go-spiffe,
// java-spiffe, py-spiffe, spiffe-helper, Envoy via SDS bridges) works with
// Sigil unchanged. Each call is attested from the socket's peer
// credentials; file permissions on the socket decide nothing.
package workloadapi

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/agent/cache"
	"github.com/sigil-mesh/sigil/agent/unixattest"
	"github.com/sigil-mesh/sigil/selector"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// Identities is what the server reads from the agent's cache.
type Identities interface {
	Match(sels selector.Set) ([]cache.Identity, bool)
	Unavailable(sels selector.Set) error
	Changed() <-chan struct{}
	Bundle() *spiffebundle.Bundle
	FetchJWTSVIDs(ctx context.Context, sels selector.Set, want spiffeid.ID, audience []string) ([]cache.JWTSVID, error)
}

// Attestor turns a caller's credentials into selectors; it may block
// (the Kubernetes attestor waits for its pod informer) until ctx ends.
type Attestor interface {
	Attest(ctx context.Context, info unixattest.AuthInfo) []selector.Selector
}

// Handler implements the SPIFFE Workload API.
type Handler struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	ids      Identities
	attestor Attestor
	log      *slog.Logger
	// firstSVIDWait bounds how long a caller whose entry has no SVID yet
	// waits before it is told to retry.
	firstSVIDWait time.Duration
}

var _ workload.SpiffeWorkloadAPIServer = (*Handler)(nil)

// New returns a Handler over the agent's identities.
func New(ids Identities, attestor Attestor, log *slog.Logger) *Handler {
	return &Handler{ids: ids, attestor: attestor, log: log, firstSVIDWait: 30 * time.Second}
}

// NewServer returns a gRPC server with the Workload API registered and the
// peer-credential transport every call is attested with.
func NewServer(h *Handler) *grpc.Server {
	s := grpc.NewServer(
		grpc.Creds(unixattest.Credentials{}),
		grpc.ChainUnaryInterceptor(requireHeader),
		grpc.ChainStreamInterceptor(requireHeaderStream),
		grpc.MaxConcurrentStreams(1000),
	)
	workload.RegisterSpiffeWorkloadAPIServer(s, h)
	return s
}

// The specification's security header, which keeps browsers and other
// SSRF-able clients from reaching the API.
const headerKey, headerValue = "workload.spiffe.io", "true"

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(headerKey) {
		if v == headerValue {
			return nil
		}
	}
	return status.Errorf(codes.InvalidArgument, "security header missing from request: %s: %s", headerKey, headerValue)
}

// workloadPrefix is the Workload API's service; other services on the
// socket (the sidecars' Discovery API) are not browser-facing by design.
const workloadPrefix = "/SpiffeWorkloadAPI/"

func requireHeader(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, workloadPrefix) {
		if err := checkHeader(ctx); err != nil {
			return nil, err
		}
	}
	return handler(ctx, req)
}

func requireHeaderStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, workloadPrefix) {
		if err := checkHeader(ss.Context()); err != nil {
			return err
		}
	}
	return handler(srv, ss)
}

func (h *Handler) attest(ctx context.Context) (selector.Set, unixattest.AuthInfo, error) {
	info, err := unixattest.FromContext(ctx)
	if err != nil {
		return nil, info, status.Error(codes.Internal, err.Error())
	}
	return selector.NewSet(h.attestor.Attest(ctx, info)...), info, nil
}

// errNoIdentity is SPIRE's answer to a caller no entry matches.
var errNoIdentity = status.Error(codes.PermissionDenied, "no identity issued")

// waitMatch returns the caller's identities. No entry at all is
// PermissionDenied at once (as SPIRE). For a stream's first answer
// (first), an SVID that cannot come now — expired and not renewed, or the
// agent unable to have anything signed — is Unavailable at once with the
// reason, so the caller retries rather than hangs to its deadline
// (Unavailable is the code Workload API clients retry on); an SVID merely
// being signed is waited for, up to firstSVIDWait. Later, an open stream
// waits quietly for the next SVIDs: the client keeps the ones it holds and
// gets the new ones the moment the agent has them. A caller that wants
// only bundles (!svid) is served once it is known to have an entry, SVID
// or not.
func (h *Handler) waitMatch(ctx context.Context, sels selector.Set, first, svid bool) ([]cache.Identity, error) {
	var deadline <-chan time.Time
	if first {
		t := time.NewTimer(h.firstSVIDWait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		changed := h.ids.Changed()
		ids, pending := h.ids.Match(sels)
		if len(ids) > 0 {
			return ids, nil
		}
		if !pending {
			return nil, errNoIdentity
		}
		if first || !svid {
			if err := h.ids.Unavailable(sels); err != nil {
				if !svid {
					return nil, nil
				}
				return nil, status.Error(codes.Unavailable, err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-deadline:
			return nil, status.Error(codes.Unavailable, "the SVID for this workload is not signed yet; retry")
		case <-changed:
		}
	}
}

// FetchX509SVID streams the caller's X.509-SVIDs, and again whenever they
// or the bundle change. When the caller loses its last identity the stream
// ends with PermissionDenied.
func (h *Handler) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	ctx := stream.Context()
	sels, info, err := h.attest(ctx)
	if err != nil {
		return err
	}
	var last []cache.Identity
	var lastBundle *spiffebundle.Bundle
	for {
		changed := h.ids.Changed()
		ids, err := h.waitMatch(ctx, sels, last == nil, true)
		if err != nil {
			if status.Code(err) == codes.PermissionDenied {
				h.log.Info("workload has no identity", "pid", info.PID, "uid", info.UID)
			}
			return err
		}
		bundle := h.ids.Bundle()
		if !sameSVIDs(last, ids) || lastBundle != bundle {
			resp, err := x509Response(ids, bundle)
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			last, lastBundle = ids, bundle
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func sameSVIDs(a, b []cache.Identity) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].SVID != b[i].SVID {
			return false
		}
	}
	return true
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

func x509Response(ids []cache.Identity, bundle *spiffebundle.Bundle) (*workload.X509SVIDResponse, error) {
	roots := concatDER(bundle.X509Authorities())
	resp := &workload.X509SVIDResponse{}
	for _, id := range ids {
		key, err := x509.MarshalPKCS8PrivateKey(id.SVID.PrivateKey)
		if err != nil {
			return nil, err
		}
		resp.Svids = append(resp.Svids, &workload.X509SVID{
			SpiffeId:    id.ID.String(),
			X509Svid:    concatDER(id.SVID.Certificates),
			X509SvidKey: key,
			Bundle:      roots,
		})
	}
	return resp, nil
}

// FetchX509Bundles streams the trust bundle to callers with an identity.
func (h *Handler) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return h.streamBundles(stream.Context(), func(b *spiffebundle.Bundle) error {
		return stream.Send(&workload.X509BundlesResponse{Bundles: map[string][]byte{b.TrustDomain().IDString(): concatDER(b.X509Authorities())}})
	})
}

// FetchJWTBundles streams the JWT bundle (JWKS) to callers with an identity.
func (h *Handler) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return h.streamBundles(stream.Context(), func(b *spiffebundle.Bundle) error {
		jwks, err := b.JWTBundle().Marshal()
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		return stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{b.TrustDomain().IDString(): jwks}})
	})
}

// streamBundles sends the bundle, then each new one. As in SPIRE, a caller
// with no identity gets PermissionDenied.
func (h *Handler) streamBundles(ctx context.Context, send func(*spiffebundle.Bundle) error) error {
	sels, _, err := h.attest(ctx)
	if err != nil {
		return err
	}
	var last *spiffebundle.Bundle
	for {
		changed := h.ids.Changed()
		if _, err := h.waitMatch(ctx, sels, last == nil, false); err != nil {
			return err
		}
		if b := h.ids.Bundle(); b != last {
			if err := send(b); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// FetchJWTSVID returns JWT-SVIDs for the audience asked for.
func (h *Handler) FetchJWTSVID(ctx context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.GetAudience()) == 0 || slices.Contains(req.GetAudience(), "") {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	var want spiffeid.ID
	if req.GetSpiffeId() != "" {
		id, err := spiffeid.FromString(req.GetSpiffeId())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid requested SPIFFE ID: %v", err)
		}
		want = id
	}
	sels, _, err := h.attest(ctx)
	if err != nil {
		return nil, err
	}
	svids, err := h.ids.FetchJWTSVIDs(ctx, sels, want, req.GetAudience())
	if errors.Is(err, cache.ErrNoIdentity) {
		return nil, errNoIdentity
	}
	// Unavailable, with the cache's reason (the agent cannot have a token
	// signed now, or the server did not answer): the caller may retry.
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	resp := &workload.JWTSVIDResponse{}
	for _, s := range svids {
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: s.ID.String(), Svid: s.Token})
	}
	return resp, nil
}

// ValidateJWTSVID checks a JWT-SVID against the trust bundle for one
// audience, for workloads that cannot validate tokens themselves.
func (h *Handler) ValidateJWTSVID(ctx context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.GetAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.GetSvid() == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	if _, _, err := h.attest(ctx); err != nil {
		return nil, err
	}
	b := h.ids.Bundle()
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), jwtbundle.NewSet(b.JWTBundle()), []string{req.GetAudience()})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
