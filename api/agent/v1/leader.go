package agentv1

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// On Kubernetes several sigil-server replicas serve agents and one, the
// leader, signs. A follower answers a signing call (Attest, RenewAgent,
// BatchNewX509SVID, NewJWTSVID) with codes.Unavailable carrying an
// ErrorInfo (google.rpc.ErrorInfo, as AIP-193 has errors say why) of
// reason NotLeaderReason and domain ErrorDomain whose metadata
// LeaderMetadataKey is the leader's agent API address (HOST:PORT; absent
// while no leader is known). The agent retries there.
const (
	ErrorDomain       = "sigil.dev"
	NotLeaderReason   = "NOT_LEADER"
	LeaderMetadataKey = "leader"
)

// NotLeader returns a follower's answer to a signing call; leader is the
// leader's agent API address, "" when none is known.
func NotLeader(leader string) error {
	msg := "this sigil-server replica does not sign: no leader is elected yet"
	md := map[string]string{}
	if leader != "" {
		msg = "this sigil-server replica does not sign: the leader at " + leader + " does"
		md[LeaderMetadataKey] = leader
	}
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.ErrorInfo{Reason: NotLeaderReason, Domain: ErrorDomain, Metadata: md})
	if err != nil {
		return status.Error(codes.Unavailable, msg)
	}
	return st.Err()
}

// LeaderHint reports whether err is a follower's NotLeader answer, and the
// leader's address it names ("" when none was known).
func LeaderHint(err error) (leader string, notLeader bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return "", false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain && info.GetReason() == NotLeaderReason {
			return info.GetMetadata()[LeaderMetadataKey], true
		}
	}
	return "", false
}
