// Package installcheck checks a Kubernetes cluster before and after Sigil
// is installed on it, as `linkerd check` does: a list of named checks, each
// passing (✔), failing (×) or warning (‼), with a hint for each that does
// not pass. Before (Pre): the API server is reachable and recent enough,
// the caller may create every object `sigil install` prints, and no Sigil
// is installed yet. After (Post): the CRDs are established, the server's
// Deployment is available, a replica leads, the trust bundle is published,
// the injection webhook has its CA bundle, endpoints and answers, and
// every node's agent is attested. It talks to the API server only
// (client-go), never to the server's admin socket.
package installcheck

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/kube"
)

// Status is what became of one check.
type Status int

// The statuses of a check.
const (
	Pass Status = iota
	Warn
	Fail
)

// Result is one check's outcome.
type Result struct {
	Status Status
	// Detail says what was found, such as "1 of 2 replicas available";
	// "" for none.
	Detail string
	// Hint says what to do about a failure or warning.
	Hint string
}

func pass(detail string) Result { return Result{Status: Pass, Detail: detail} }

func fail(detail, hint string) Result { return Result{Status: Fail, Detail: detail, Hint: hint} }

func warn(detail, hint string) Result { return Result{Status: Warn, Detail: detail, Hint: hint} }

// Check is one named check in a category.
type Check struct {
	Category string
	// Name says what passing means, such as "can query the Kubernetes API".
	Name string
	// Fatal checks stop the run when they fail: what follows depends on
	// them (nothing can be checked without an API server).
	Fatal bool
	Run   func(ctx context.Context, e *Env) Result
}

// Env is what checks read the cluster through.
type Env struct {
	Clients *kube.Clients
	// Namespace holds Sigil's own objects.
	Namespace string
	// Now is the clock leases are judged by.
	Now func() time.Time

	plans   []planned // the manifests' objects, found by plan
	planErr error
}

// Options say which checks to run.
type Options struct {
	// Pre runs the pre-install checks instead of the post-install ones.
	Pre bool
}

// Checks lists the checks o asks for, in order.
func Checks(o Options) []Check {
	checks := apiChecks()
	if o.Pre {
		return append(checks, preChecks()...)
	}
	return append(checks, postChecks()...)
}

// Run runs checks against e in order, writing each result to w, and
// reports whether none failed (warnings do not fail). A fatal failure
// stops the run.
func Run(ctx context.Context, w io.Writer, e *Env, checks []Check) bool {
	ok := true
	category := ""
	for _, c := range checks {
		if c.Category != category {
			if category != "" {
				fmt.Fprintln(w)
			}
			category = c.Category
			fmt.Fprintf(w, "%s\n%s\n", category, strings.Repeat("-", len(category)))
		}
		r := c.Run(ctx, e)
		mark := map[Status]string{Pass: "✔", Warn: "‼", Fail: "×"}[r.Status]
		line := mark + " " + c.Name
		if r.Detail != "" {
			line += ": " + r.Detail
		}
		fmt.Fprintln(w, line)
		if r.Status != Pass && r.Hint != "" {
			for h := range strings.Lines(r.Hint) {
				fmt.Fprintf(w, "    %s", h)
			}
			fmt.Fprintln(w)
		}
		if r.Status == Fail {
			ok = false
			if c.Fatal {
				fmt.Fprintln(w, "\nstopped: the checks that follow need this one")
				break
			}
		}
	}
	if ok {
		fmt.Fprintln(w, "\nStatus check results are ✔")
	} else {
		fmt.Fprintln(w, "\nStatus check results are ×")
	}
	return ok
}

// MinKubernetesMinor is the oldest Kubernetes minor version (1.x) Sigil
// runs on: the injected proxy is a native sidecar (an init container with
// restartPolicy: Always), on by default from 1.29.
const MinKubernetesMinor = 29

const catAPI = "kubernetes-api"

func apiChecks() []Check {
	return []Check{
		{Category: catAPI, Name: "can query the Kubernetes API", Fatal: true, Run: func(ctx context.Context, e *Env) Result {
			v, err := e.Clients.Core.Discovery().ServerVersion()
			if err != nil {
				return fail(err.Error(), "check --kubeconfig (or $KUBECONFIG) and that the API server is reachable from here")
			}
			return pass(fmt.Sprintf("%s (%s)", e.Clients.Config.Host, v.GitVersion))
		}},
		{Category: catAPI, Name: fmt.Sprintf("Kubernetes is 1.%d or later", MinKubernetesMinor), Fatal: true, Run: func(ctx context.Context, e *Env) Result {
			v, err := e.Clients.Core.Discovery().ServerVersion()
			if err != nil {
				return fail(err.Error(), "")
			}
			major, minor, err := parseVersion(v.Major, v.Minor)
			if err != nil {
				return fail(err.Error(), "")
			}
			if major != 1 || minor < MinKubernetesMinor {
				return fail(fmt.Sprintf("the API server is %d.%d", major, minor),
					fmt.Sprintf("Sigil injects its proxy as a native sidecar (an init container with restartPolicy: Always), which needs Kubernetes 1.%d or later: upgrade the cluster", MinKubernetesMinor))
			}
			return pass(fmt.Sprintf("%d.%d", major, minor))
		}},
	}
}

// parseVersion reads version.Info's Major and Minor, which some
// providers suffix with "+" (GKE's "29+").
func parseVersion(major, minor string) (int, int, error) {
	var ma, mi int
	if _, err := fmt.Sscanf(strings.TrimSuffix(major, "+"), "%d", &ma); err != nil {
		return 0, 0, fmt.Errorf("installcheck: API server major version %q: %w", major, err)
	}
	if _, err := fmt.Sscanf(strings.TrimSuffix(minor, "+"), "%d", &mi); err != nil {
		return 0, 0, fmt.Errorf("installcheck: API server minor version %q: %w", minor, err)
	}
	return ma, mi, nil
}
