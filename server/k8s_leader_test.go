package server

import (
	"context"
	"testing"

	agentv1 "github.com/sigil-mesh/sigil/api/agent/v1"
	"github.com/sigil-mesh/sigil/k8s/leader"
	"k8s.io/client-go/kubernetes/fake"
)

// TestSigningOnlyOnLeader: a replica that does not hold the Lease answers
// every signing call with NOT_LEADER (before it reads the request or the
// caller), naming the leader when it knows one; a plain-host server, with
// no election, always signs.
func TestSigningOnlyOnLeader(t *testing.T) {
	ctx := context.Background()
	calls := map[string]func(*Server) error{
		"Attest": func(s *Server) error { _, err := s.Attest(ctx, &agentv1.AttestRequest{}); return err },
		"RenewAgent": func(s *Server) error {
			_, err := s.RenewAgent(ctx, &agentv1.RenewAgentRequest{})
			return err
		},
		"BatchNewX509SVID": func(s *Server) error {
			_, err := s.BatchNewX509SVID(ctx, &agentv1.BatchNewX509SVIDRequest{})
			return err
		},
		"NewJWTSVID": func(s *Server) error {
			_, err := s.NewJWTSVID(ctx, &agentv1.NewJWTSVIDRequest{})
			return err
		},
	}
	e, err := leader.New(leader.Config{Leases: fake.NewClientset().CoordinationV1(), Namespace: "sigil-system", Identity: leader.Identity("sigil-server-b", "10.0.0.2:8081")})
	if err != nil {
		t.Fatal(err)
	}
	follower := &Server{ha: &haState{}}
	follower.ha.elector.Store(e)
	for name, call := range calls {
		leaderAddr, notLeader := agentv1.LeaderHint(call(follower))
		if !notLeader || leaderAddr != "" {
			t.Errorf("%s on a follower with no leader known: NOT_LEADER %v, leader %q", name, notLeader, leaderAddr)
		}
	}
	starting := &Server{ha: &haState{}} // the election has not started yet
	if starting.isLeader() {
		t.Error("a replica whose election has not started says it leads")
	}
	if _, notLeader := agentv1.LeaderHint(calls["BatchNewX509SVID"](starting)); !notLeader {
		t.Error("a replica whose election has not started signs")
	}
	if plain := (&Server{}); !plain.isLeader() || plain.leaderOnly() != nil {
		t.Error("a plain-host server does not sign")
	}
}

func TestLeaderIdentityAddress(t *testing.T) {
	cases := []struct{ pod, addr string }{
		{"sigil-server-7d9f-x2k4q", "10.0.3.7:8081"},
		{"sigil-server-0", "[fd00::7]:8081"},
	}
	for _, tc := range cases {
		got, ok := leader.Address(leader.Identity(tc.pod, tc.addr))
		if !ok || got != tc.addr {
			t.Errorf("Address(Identity(%s, %s)) = %s, %v", tc.pod, tc.addr, got, ok)
		}
	}
}

// TestHAFlagsChecked: the HA flags are refused without --kubernetes (no
// flag accepted and ignored), with timing client-go would refuse, and
// beside a --kms the Secret makes unused.
func TestHAFlagsChecked(t *testing.T) {
	k8s := func(l LeaderConfig) Config {
		return Config{KMS: "softkms:", Kubernetes: KubeConfig{Enabled: true, Leader: l}}
	}
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", k8s(LeaderConfig{PodName: "sigil-server-0"}), true},
		{"short timing", k8s(LeaderConfig{PodName: "sigil-server-0", LeaseDuration: 3e9, RenewDeadline: 2e9, RetryPeriod: 5e8}), true},
		{"without --kubernetes", Config{Kubernetes: KubeConfig{Leader: LeaderConfig{LeaseDuration: 3e9}}}, false},
		{"renew deadline past the lease", k8s(LeaderConfig{PodName: "p", LeaseDuration: 2e9, RenewDeadline: 3e9}), false},
		{"advertise without a port", k8s(LeaderConfig{PodName: "p", AdvertiseAddress: "10.0.0.1"}), false},
		{"advertise port 0", k8s(LeaderConfig{PodName: "p", AdvertiseAddress: "10.0.0.1:0"}), false},
		{"not a pod name", k8s(LeaderConfig{PodName: "Sigil_Server"}), false},
		{"another kms", Config{KMS: "awskms:", Kubernetes: KubeConfig{Enabled: true, Leader: LeaderConfig{PodName: "p"}}}, false},
	}
	for _, tc := range cases {
		errs := tc.cfg.checkHA()
		if (len(errs) == 0) != tc.ok {
			t.Errorf("%s: %v", tc.name, errs)
		}
	}
}
