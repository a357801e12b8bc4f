package registry

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// ProxyRecord is a sidecar as its agent last reported it.
type ProxyRecord struct {
	AgentID       string            `json:"agent_id"`
	ProxyID       string            `json:"proxy_id"`
	SPIFFEID      string            `json:"spiffe_id"`
	Service       string            `json:"service"`
	Address       string            `json:"address"`
	Labels        map[string]string `json:"labels"`
	ConfigVersion int64             `json:"config_version"`
	ReportedAt    time.Time         `json:"reported_at"`
	// Namespace is the namespace of its service; "" in rows stored
	// before namespaces were (a sidecar then reads its SPIFFE ID's).
	Namespace string `json:"namespace"`
}

func endpointKey(p ProxyRecord) string {
	labels, _ := json.Marshal(p.Labels)
	return p.Service + "\x00" + p.Namespace + "\x00" + p.Address + "\x00" + p.SPIFFEID + "\x00" + string(labels)
}

// ReplaceProxies replaces everything agentID reported before with ps. It
// reports whether the set of endpoints changed (config versions alone do
// not count) and the endpoints revision after the change.
func (s *Store) ReplaceProxies(ctx context.Context, agentID string, ps []ProxyRecord, now time.Time) (bool, int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	old, err := scanProxies(tx.QueryContext(ctx, proxyColumns+` WHERE agent_id = ?`, agentID))
	if err != nil {
		return false, 0, err
	}
	oldKeys, newKeys := make([]string, 0, len(old)), make([]string, 0, len(ps))
	for _, p := range old {
		oldKeys = append(oldKeys, endpointKey(p))
	}
	for _, p := range ps {
		newKeys = append(newKeys, endpointKey(p))
	}
	sort.Strings(oldKeys)
	sort.Strings(newKeys)
	changed := fmt.Sprint(oldKeys) != fmt.Sprint(newKeys)
	if _, err := tx.ExecContext(ctx, `DELETE FROM proxies WHERE agent_id = ?`, agentID); err != nil {
		return false, 0, fmt.Errorf("registry: replacing proxies: %w", err)
	}
	for _, p := range ps {
		labels, _ := json.Marshal(p.Labels)
		if _, err := tx.ExecContext(ctx, `INSERT INTO proxies (agent_id, proxy_id, spiffe_id, service, namespace, address, labels, config_version, reported_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, agentID, p.ProxyID, p.SPIFFEID, p.Service, p.Namespace, p.Address, string(labels), p.ConfigVersion, now.Unix()); err != nil {
			return false, 0, fmt.Errorf("registry: storing proxy %s: %w", p.ProxyID, err)
		}
	}
	var rev int64
	if changed {
		if rev, err = bumpMeta(ctx, tx, "endpoints_revision"); err != nil {
			return false, 0, err
		}
	} else if rev, err = metaInt(ctx, tx, "endpoints_revision"); err != nil {
		return false, 0, err
	}
	return changed, rev, tx.Commit()
}

// ExpireProxies removes the proxies of agents that have not reported since
// before; it reports how many went.
func (s *Store) ExpireProxies(ctx context.Context, before time.Time) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM proxies WHERE reported_at < ?`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("registry: expiring proxies: %w", err)
	}
	n, _ := res.RowsAffected()
	if n > 0 {
		if _, err := bumpMeta(ctx, tx, "endpoints_revision"); err != nil {
			return 0, err
		}
	}
	return n, tx.Commit()
}

const proxyColumns = `SELECT agent_id, proxy_id, spiffe_id, service, namespace, address, labels, config_version, reported_at FROM proxies`

func scanProxies(rows *sql.Rows, err error) ([]ProxyRecord, error) {
	if err != nil {
		return nil, fmt.Errorf("registry: listing proxies: %w", err)
	}
	defer rows.Close()
	var out []ProxyRecord
	for rows.Next() {
		var p ProxyRecord
		var labels string
		var reported int64
		if err := rows.Scan(&p.AgentID, &p.ProxyID, &p.SPIFFEID, &p.Service, &p.Namespace, &p.Address, &labels, &p.ConfigVersion, &reported); err != nil {
			return nil, fmt.Errorf("registry: listing proxies: %w", err)
		}
		_ = json.Unmarshal([]byte(labels), &p.Labels)
		p.ReportedAt = time.Unix(reported, 0).UTC()
		out = append(out, p)
	}
	return out, rows.Err()
}

// ListProxies returns every proxy, by service then address, with the
// endpoints revision.
func (s *Store) ListProxies(ctx context.Context) ([]ProxyRecord, int64, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	rev, err := metaInt(ctx, tx, "endpoints_revision")
	if err != nil {
		return nil, 0, err
	}
	ps, err := scanProxies(tx.QueryContext(ctx, proxyColumns+` ORDER BY namespace, service, address, proxy_id`))
	return ps, rev, err
}

// EndpointsRevision returns the current endpoints revision, which moves
// whenever an endpoint comes or goes.
func (s *Store) EndpointsRevision(ctx context.Context) (int64, error) {
	v, err := metaInt(ctx, s.db, "endpoints_revision")
	if err != nil {
		return 0, fmt.Errorf("registry: endpoints revision: %w", err)
	}
	return v, nil
}
