package adminv1

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// AdminClient talks to a running server's admin socket. Every request
// times out after 30 seconds; an error the server sends is an *APIError.
type AdminClient struct {
	socket string
	http   *http.Client
}

// NewAdminClient returns a client for the admin socket at path.
func NewAdminClient(path string) *AdminClient {
	return &AdminClient{socket: path, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *AdminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("adminv1: encoding the request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://sigil-server"+path, body)
	if err != nil {
		return fmt.Errorf("adminv1: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (admin socket %s)", ErrServerNotRunning, c.socket)
		}
		return c.transportError(ctx, method, path, err)
	}
	defer resp.Body.Close()
	// Listings of a configuration at --max-config-bytes (64 MiB) carry
	// per-resource fields besides.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return c.transportError(ctx, method, path, err)
	}
	if resp.StatusCode >= 300 {
		var apiErr APIError
		if json.Unmarshal(data, &apiErr) == nil && apiErr.Message != "" {
			apiErr.Status = resp.StatusCode
			return &apiErr
		}
		return fmt.Errorf("adminv1: %s", resp.Status)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("adminv1: decoding the response to %s %s: %w", method, path, err)
		}
		return nil
	}
}

// transportError words a failed exchange on the admin socket: a server
// that took the connection but did not answer within the client's bound
// (stopped, or starved of CPU) is named with its socket and the bound.
func (c *AdminClient) transportError(ctx context.Context, method, path string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("adminv1: the server on admin socket %s did not answer %s %s within %s: %w", c.socket, method, path, c.http.Timeout, err)
	}
	return fmt.Errorf("adminv1: admin socket %s: %w", c.socket, err)
}

// Bundle returns the trust bundle as PEM ("pem") or SPIFFE JSON ("spiffe").
func (c *AdminClient) Bundle(ctx context.Context, format string) ([]byte, error) {
	var out []byte
	err := c.do(ctx, http.MethodGet, "/v1/bundle?format="+url.QueryEscape(format), nil, &out)
	return out, err
}

// CreateJoinToken makes a single-use join token for node.
func (c *AdminClient) CreateJoinToken(ctx context.Context, node string, ttl time.Duration) (TokenResponse, error) {
	var out TokenResponse
	err := c.do(ctx, http.MethodPost, "/v1/join-tokens", TokenRequest{Node: node, TTL: ttl}, &out)
	return out, err
}

// CreateEntry creates a registration entry.
func (c *AdminClient) CreateEntry(ctx context.Context, req EntryRequest) (Entry, error) {
	var out Entry
	err := c.do(ctx, http.MethodPost, "/v1/entries", req, &out)
	return out, err
}

// ListEntries lists entries, all or those of one parent.
func (c *AdminClient) ListEntries(ctx context.Context, parentID string) ([]Entry, error) {
	var out []Entry
	err := c.do(ctx, http.MethodGet, "/v1/entries?parent_id="+url.QueryEscape(parentID), nil, &out)
	return out, err
}

// EvictAgent removes an attested agent and returns what it was.
func (c *AdminClient) EvictAgent(ctx context.Context, id string) (Agent, error) {
	var out Agent
	err := c.do(ctx, http.MethodDelete, "/v1/agents/"+url.PathEscape(id), nil, &out)
	return out, err
}

// BanAgent evicts an agent and keeps it out (on Kubernetes) until
// UnbanAgent; it returns what the agent was.
func (c *AdminClient) BanAgent(ctx context.Context, id string) (Agent, error) {
	var out Agent
	err := c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(id)+"/ban", nil, &out)
	return out, err
}

// UnbanAgent lifts an agent's ban: it may attest again.
func (c *AdminClient) UnbanAgent(ctx context.Context, id string) (Agent, error) {
	var out Agent
	err := c.do(ctx, http.MethodDelete, "/v1/agents/"+url.PathEscape(id)+"/ban", nil, &out)
	return out, err
}

// DeleteEntry deletes an entry and returns what it was.
func (c *AdminClient) DeleteEntry(ctx context.Context, id string) (Entry, error) {
	var out Entry
	err := c.do(ctx, http.MethodDelete, "/v1/entries/"+url.PathEscape(id), nil, &out)
	return out, err
}

// ListAgents lists attested agents.
func (c *AdminClient) ListAgents(ctx context.Context) ([]AgentStatus, error) {
	var out []AgentStatus
	err := c.do(ctx, http.MethodGet, "/v1/agents", nil, &out)
	return out, err
}

// Apply sends files of configuration resources; with dryRun nothing is
// stored and the response says what would change.
func (c *AdminClient) Apply(ctx context.Context, files []File, dryRun bool) (ApplyResponse, error) {
	var out ApplyResponse
	err := c.do(ctx, http.MethodPost, "/v1/config", ApplyRequest{Files: files, DryRun: dryRun}, &out)
	return out, err
}

// ListConfig lists the resources of a kind (virtualservices, destinationrules).
func (c *AdminClient) ListConfig(ctx context.Context, kind string) ([]Resource, error) {
	var out []Resource
	err := c.do(ctx, http.MethodGet, "/v1/config/"+url.PathEscape(kind), nil, &out)
	return out, err
}

// DeleteConfig deletes one resource.
func (c *AdminClient) DeleteConfig(ctx context.Context, kind, namespace, name string) (Result, error) {
	var out Result
	err := c.do(ctx, http.MethodDelete, "/v1/config/"+url.PathEscape(kind)+"/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, &out)
	return out, err
}

// DeleteConfigBatch deletes many resources in one transaction (at most
// MaxDeleteBatch); those that do not exist come back in NotFound.
func (c *AdminClient) DeleteConfigBatch(ctx context.Context, keys []ResourceKey) (DeleteResponse, error) {
	var out DeleteResponse
	err := c.do(ctx, http.MethodPost, "/v1/config/delete", DeleteRequest{Resources: keys}, &out)
	return out, err
}

// ListProxies lists sidecars and whether each runs the current config.
func (c *AdminClient) ListProxies(ctx context.Context) ([]ProxyStatus, error) {
	var out []ProxyStatus
	err := c.do(ctx, http.MethodGet, "/v1/proxies", nil, &out)
	return out, err
}

// ListServices lists services and their endpoints.
func (c *AdminClient) ListServices(ctx context.Context) ([]ServiceInfo, error) {
	var out []ServiceInfo
	err := c.do(ctx, http.MethodGet, "/v1/services", nil, &out)
	return out, err
}
