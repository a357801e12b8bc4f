package registry

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// StoredResource is a configuration resource as kept: its spec is JSON
// that the traffic package validated before it was stored.
type StoredResource struct {
	Kind      string          `json:"kind"`
	Namespace string          `json:"namespace"`
	Name      string          `json:"name"`
	Spec      json.RawMessage `json:"spec"`
	// Version is the config version at which it last changed.
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// Origin is where it came from: "" for the admin API (sigil apply),
	// or the Kubernetes object it mirrors (OriginKubernetes, a slash and
	// the object's reference) when the server reads it from the API server.
	Origin string `json:"origin,omitempty"`
}

// OriginKubernetes starts the Origin of a resource mirrored from a
// Kubernetes object.
const OriginKubernetes = "kubernetes"

// Apply outcomes, as kubectl prints them.
const (
	Created    = "created"
	Configured = "configured"
	Unchanged  = "unchanged"
	Deleted    = "deleted"
)

// ApplyResult is what happened to one resource.
type ApplyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    string `json:"action"`
}

// ApplyResources stores all of rs in one transaction, or none of them when
// dryRun is set (it still reports what would happen). The config version
// moves once if anything changed.
func (s *Store) ApplyResources(ctx context.Context, rs []StoredResource, dryRun bool, now time.Time) ([]ApplyResult, int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	version, err := metaInt(ctx, tx, "config_version")
	if err != nil {
		return nil, 0, fmt.Errorf("registry: config version: %w", err)
	}
	results := make([]ApplyResult, len(rs))
	changed := false
	for i, r := range rs {
		results[i] = ApplyResult{Kind: r.Kind, Namespace: r.Namespace, Name: r.Name, Action: Created}
		var old []byte
		var origin string
		err := tx.QueryRowContext(ctx, `SELECT spec, origin FROM resources WHERE kind = ? AND namespace = ? AND name = ?`, r.Kind, r.Namespace, r.Name).Scan(&old, &origin)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, 0, fmt.Errorf("registry: reading %s %s/%s: %w", r.Kind, r.Namespace, r.Name, err)
		case bytes.Equal(old, r.Spec) && origin == r.Origin:
			results[i].Action = Unchanged
			continue
		default:
			results[i].Action = Configured
		}
		changed = true
	}
	if dryRun || !changed {
		return results, version, nil
	}
	if version, err = bumpMeta(ctx, tx, "config_version"); err != nil {
		return nil, 0, err
	}
	for i, r := range rs {
		if results[i].Action == Unchanged {
			continue
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO resources (kind, namespace, name, spec, version, updated_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (kind, namespace, name) DO UPDATE SET spec = excluded.spec, version = excluded.version, updated_at = excluded.updated_at, origin = excluded.origin`,
			r.Kind, r.Namespace, r.Name, []byte(r.Spec), version, now.Unix(), r.Origin)
		if err != nil {
			return nil, 0, fmt.Errorf("registry: storing %s %s/%s: %w", r.Kind, r.Namespace, r.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, fmt.Errorf("registry: applying: %w", err)
	}
	return results, version, nil
}

// ResourceKey names a stored resource.
type ResourceKey struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// DeleteResource removes one resource and moves the config version.
func (s *Store) DeleteResource(ctx context.Context, kind, namespace, name string) (int64, error) {
	return s.DeleteResources(ctx, []ResourceKey{{Kind: kind, Namespace: namespace, Name: name}})
}

// DeleteResources removes every resource of keys in one transaction and
// moves the config version once. All must exist: otherwise nothing is
// removed and the error wraps ErrNotFound, naming the first missing one.
func (s *Store) DeleteResources(ctx context.Context, keys []ResourceKey) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `DELETE FROM resources WHERE kind = ? AND namespace = ? AND name = ?`)
	if err != nil {
		return 0, fmt.Errorf("registry: deleting resources: %w", err)
	}
	defer stmt.Close()
	for _, k := range keys {
		res, err := stmt.ExecContext(ctx, k.Kind, k.Namespace, k.Name)
		if err != nil {
			return 0, fmt.Errorf("registry: deleting %s %s/%s: %w", k.Kind, k.Namespace, k.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return 0, fmt.Errorf("%w: %s %s/%s", ErrNotFound, k.Kind, k.Namespace, k.Name)
		}
	}
	v, err := bumpMeta(ctx, tx, "config_version")
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("registry: deleting resources: %w", err)
	}
	return v, nil
}

// ListResources returns the resources of a kind (all kinds for ""), and
// the config version they were read at.
func (s *Store) ListResources(ctx context.Context, kind string) ([]StoredResource, int64, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	version, err := metaInt(ctx, tx, "config_version")
	if err != nil {
		return nil, 0, fmt.Errorf("registry: config version: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT kind, namespace, name, spec, version, updated_at, origin FROM resources
		WHERE ? = '' OR kind = ? ORDER BY kind, namespace, name`, kind, kind)
	if err != nil {
		return nil, 0, fmt.Errorf("registry: listing resources: %w", err)
	}
	defer rows.Close()
	var out []StoredResource
	for rows.Next() {
		var r StoredResource
		var spec []byte
		var updated int64
		if err := rows.Scan(&r.Kind, &r.Namespace, &r.Name, &spec, &r.Version, &updated, &r.Origin); err != nil {
			return nil, 0, fmt.Errorf("registry: listing resources: %w", err)
		}
		r.Spec, r.UpdatedAt = spec, time.Unix(updated, 0).UTC()
		out = append(out, r)
	}
	return out, version, rows.Err()
}

// ConfigVersion returns the current config version.
func (s *Store) ConfigVersion(ctx context.Context) (int64, error) {
	v, err := metaInt(ctx, s.db, "config_version")
	if err != nil {
		return 0, fmt.Errorf("registry: config version: %w", err)
	}
	return v, nil
}
