// Package capture redirects an app's outbound TCP to its sidecar and
// tells the sidecar where a redirected connection was going: the iptables
// rules of transparent mode (as Istio's init container installs them) and
// SO_ORIGINAL_DST. Both are Linux's; elsewhere OriginalDst returns an error
// wrapping errors.ErrUnsupported, so the sidecar and the CLI still build
// (the CLI is what users run on laptops).
package capture

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// IptablesConfig says how to capture an app's outbound TCP, as Istio's init
// container does: every TCP connection leaving the network namespace goes
// to the sidecar's outbound port, except the sidecar's own (by uid) and
// loopback.
type IptablesConfig struct {
	ProxyUID     int
	OutboundPort int
	ExcludePorts []int // destination ports left alone (for example the agent's)
}

const chain = "SIGIL_OUTPUT"

// Rules returns the iptables commands (arguments after "iptables") that
// install the redirect. They are idempotent only when run on a clean table;
// RemoveRules undoes them.
func (c IptablesConfig) Rules() ([][]string, error) {
	if c.ProxyUID < 0 {
		return nil, fmt.Errorf("capture: --proxy-uid %d: must be the uid sigil-proxy runs as", c.ProxyUID)
	}
	if c.OutboundPort < 1 || c.OutboundPort > 65535 {
		return nil, fmt.Errorf("capture: --outbound-port %d: not a port", c.OutboundPort)
	}
	rules := [][]string{
		{"-t", "nat", "-N", chain},
		{"-t", "nat", "-A", chain, "-m", "owner", "--uid-owner", strconv.Itoa(c.ProxyUID), "-j", "RETURN"},
		{"-t", "nat", "-A", chain, "-d", "127.0.0.0/8", "-j", "RETURN"},
	}
	for _, p := range c.ExcludePorts {
		rules = append(rules, []string{"-t", "nat", "-A", chain, "-p", "tcp", "--dport", strconv.Itoa(p), "-j", "RETURN"})
	}
	rules = append(rules,
		[]string{"-t", "nat", "-A", chain, "-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(c.OutboundPort)},
		[]string{"-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", chain},
	)
	return rules, nil
}

// RemoveRules undoes Rules.
func RemoveRules() [][]string {
	return [][]string{
		{"-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", chain},
		{"-t", "nat", "-F", chain},
		{"-t", "nat", "-X", chain},
	}
}

// ApplyRules runs each rule with the iptables binary, stopping at the first
// failure and naming it.
func ApplyRules(ctx context.Context, rules [][]string) error {
	for _, r := range rules {
		if out, err := exec.CommandContext(ctx, "iptables", r...).CombinedOutput(); err != nil {
			return fmt.Errorf("capture: iptables %s: %w: %s", strings.Join(r, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
