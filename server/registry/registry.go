// Package registry is the server's store: join tokens, attested agents,
// registration entries and the CA's state (registry.go, entries.go), the
// configuration resources (resources.go) and the sidecars' endpoints
// (endpoints.go), in one SQLite file (pure-Go driver, WAL mode) in the
// server's data directory. Only sigil-server links it.
//
// Entries carry a Source. Entries made with `sigil-server entry create` are
// "local"; a Kubernetes controller can later write entries derived from
// namespaces and service accounts with Source "k8s" through the same
// methods, and the server, its agents and their caches stay unchanged.
// Every change to entries bumps one revision counter in the same
// transaction, which is what the server streams to agents.
package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// Store is the registry. It is safe for concurrent use.
type Store struct {
	db *sql.DB
}

// Sentinel errors callers branch on.
var (
	ErrNotFound     = errors.New("registry: not found")
	ErrExists       = errors.New("registry: already exists")
	ErrTokenUsed    = errors.New("registry: join token already used")
	ErrTokenExpired = errors.New("registry: join token expired")
)

const schema = `
CREATE TABLE IF NOT EXISTS meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS join_tokens (
	hash       TEXT PRIMARY KEY,
	node       TEXT NOT NULL,
	expires_at INTEGER NOT NULL,
	used_at    INTEGER
);
CREATE TABLE IF NOT EXISTS agents (
	spiffe_id   TEXT PRIMARY KEY,
	attestor    TEXT NOT NULL,
	node        TEXT NOT NULL,
	serial      TEXT NOT NULL,
	expires_at  INTEGER NOT NULL,
	attested_at INTEGER NOT NULL,
	updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
	id         TEXT PRIMARY KEY,
	spiffe_id  TEXT NOT NULL,
	parent_id  TEXT NOT NULL,
	selectors  TEXT NOT NULL,
	x509_ttl   INTEGER NOT NULL,
	jwt_ttl    INTEGER NOT NULL,
	source     TEXT NOT NULL,
	revision   INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	UNIQUE (spiffe_id, parent_id, selectors)
);
CREATE INDEX IF NOT EXISTS entries_parent ON entries (parent_id);
CREATE TABLE IF NOT EXISTS resources (
	kind       TEXT NOT NULL,
	namespace  TEXT NOT NULL,
	name       TEXT NOT NULL,
	spec       BLOB NOT NULL,
	version    INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	origin     TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS proxies (
	agent_id       TEXT NOT NULL,
	proxy_id       TEXT NOT NULL,
	spiffe_id      TEXT NOT NULL,
	service        TEXT NOT NULL,
	namespace      TEXT NOT NULL DEFAULT '',
	address        TEXT NOT NULL,
	labels         TEXT NOT NULL,
	config_version INTEGER NOT NULL,
	reported_at    INTEGER NOT NULL,
	PRIMARY KEY (agent_id, proxy_id)
);
`

// Open opens (creating if needed) the registry in dir/sigil.db.
func Open(ctx context.Context, dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: data dir: %w", err)
	}
	path := filepath.Join(dir, "sigil.db")
	// The file holds the CA's key references and token hashes: owner only.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("registry: opening %s: %w", path, err)
	}
	// One writer at a time is SQLite's model; a single connection also keeps
	// WAL checkpoints simple. Reads are fast enough for the server's load.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("registry: schema: %w", err)
	}
	// Columns added after the first release, for data dirs made before.
	if _, err := db.ExecContext(ctx, `ALTER TABLE entries ADD COLUMN services TEXT NOT NULL DEFAULT '[]'`); err != nil && !strings.Contains(err.Error(), "duplicate column") {
		db.Close()
		return nil, fmt.Errorf("registry: migrating entries: %w", err)
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE proxies ADD COLUMN namespace TEXT NOT NULL DEFAULT ''`); err != nil && !strings.Contains(err.Error(), "duplicate column") {
		db.Close()
		return nil, fmt.Errorf("registry: migrating proxies: %w", err)
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE resources ADD COLUMN origin TEXT NOT NULL DEFAULT ''`); err != nil && !strings.Contains(err.Error(), "duplicate column") {
		db.Close()
		return nil, fmt.Errorf("registry: migrating resources: %w", err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

const caStateKey = "ca_state"

// LoadCAState returns the CA's saved state, or nil on a new store.
func (s *Store) LoadCAState(ctx context.Context) ([]byte, error) {
	var v []byte
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, caStateKey).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registry: loading ca state: %w", err)
	}
	return v, nil
}

// SaveCAState replaces the CA's state.
func (s *Store) SaveCAState(ctx context.Context, state []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, caStateKey, state)
	if err != nil {
		return fmt.Errorf("registry: saving ca state: %w", err)
	}
	return nil
}

// TrustDomain returns the trust domain fixed at first start, or "".
func (s *Store) TrustDomain(ctx context.Context) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'trust_domain'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("registry: trust domain: %w", err)
	}
	return v, nil
}

// SetTrustDomain fixes the trust domain; it can be set once.
func (s *Store) SetTrustDomain(ctx context.Context, td string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('trust_domain', ?)`, td)
	if err != nil {
		return fmt.Errorf("registry: setting trust domain: %w", err)
	}
	return nil
}

// CreateJoinToken stores a token's hash (never the token) for node.
func (s *Store) CreateJoinToken(ctx context.Context, hash, node string, expires time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO join_tokens (hash, node, expires_at) VALUES (?, ?, ?)`, hash, node, expires.Unix())
	if err != nil {
		return fmt.Errorf("registry: creating join token: %w", err)
	}
	return nil
}

// JoinTokenExists reports whether a token whose hash starts with prefix
// (hex, as the audit trail records it) is stored.
func (s *Store) JoinTokenExists(ctx context.Context, prefix string) (bool, error) {
	if prefix == "" {
		return false, nil
	}
	var ok bool
	err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM join_tokens WHERE substr(hash, 1, length(?1)) = ?1)`, prefix).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("registry: join tokens: %w", err)
	}
	return ok, nil
}

// UseJoinToken marks the token with this hash used and returns its node.
// A token works once: a second use, or a use after expiry, is refused.
func (s *Store) UseJoinToken(ctx context.Context, hash string, now time.Time) (string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	var node string
	var expires int64
	var used sql.NullInt64
	err = tx.QueryRowContext(ctx, `SELECT node, expires_at, used_at FROM join_tokens WHERE hash = ?`, hash).Scan(&node, &expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("%w: join token", ErrNotFound)
	case err != nil:
		return "", fmt.Errorf("registry: join token: %w", err)
	case used.Valid:
		return node, ErrTokenUsed
	case now.Unix() >= expires:
		return node, ErrTokenExpired
	}
	if _, err := tx.ExecContext(ctx, `UPDATE join_tokens SET used_at = ? WHERE hash = ?`, now.Unix(), hash); err != nil {
		return "", fmt.Errorf("registry: using join token: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("registry: using join token: %w", err)
	}
	return node, nil
}

// Agent is an attested node agent.
type Agent struct {
	SPIFFEID   string
	Attestor   string
	Node       string
	Serial     string // serial of the agent's current SVID, hex
	ExpiresAt  time.Time
	AttestedAt time.Time
}

// SaveAgent records an agent and the serial of its newest SVID.
func (s *Store) SaveAgent(ctx context.Context, a Agent, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO agents (spiffe_id, attestor, node, serial, expires_at, attested_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (spiffe_id) DO UPDATE SET serial = excluded.serial, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
		a.SPIFFEID, a.Attestor, a.Node, a.Serial, a.ExpiresAt.Unix(), a.AttestedAt.Unix(), now.Unix())
	if err != nil {
		return fmt.Errorf("registry: saving agent %s: %w", a.SPIFFEID, err)
	}
	return nil
}

// GetAgent returns the agent with this SPIFFE ID.
func (s *Store) GetAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	var exp, att int64
	err := s.db.QueryRowContext(ctx, `SELECT spiffe_id, attestor, node, serial, expires_at, attested_at FROM agents WHERE spiffe_id = ?`, id).
		Scan(&a.SPIFFEID, &a.Attestor, &a.Node, &a.Serial, &exp, &att)
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, fmt.Errorf("%w: agent %s", ErrNotFound, id)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("registry: agent %s: %w", id, err)
	}
	a.ExpiresAt, a.AttestedAt = time.Unix(exp, 0), time.Unix(att, 0)
	return a, nil
}

// DeleteAgent removes an agent and the endpoints its sidecars reported,
// in one transaction: an evicted node stops being an agent and stops
// receiving traffic at once.
func (s *Store) DeleteAgent(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM agents WHERE spiffe_id = ?`, id)
	if err != nil {
		return fmt.Errorf("registry: deleting agent %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%w: agent %s", ErrNotFound, id)
	}
	res, err = tx.ExecContext(ctx, `DELETE FROM proxies WHERE agent_id = ?`, id)
	if err != nil {
		return fmt.Errorf("registry: deleting the proxies of agent %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		if _, err := bumpMeta(ctx, tx, "endpoints_revision"); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// ListAgents returns every agent.
func (s *Store) ListAgents(ctx context.Context) ([]Agent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT spiffe_id, attestor, node, serial, expires_at, attested_at FROM agents ORDER BY spiffe_id`)
	if err != nil {
		return nil, fmt.Errorf("registry: listing agents: %w", err)
	}
	defer rows.Close()
	var out []Agent
	for rows.Next() {
		var a Agent
		var exp, att int64
		if err := rows.Scan(&a.SPIFFEID, &a.Attestor, &a.Node, &a.Serial, &exp, &att); err != nil {
			return nil, fmt.Errorf("registry: listing agents: %w", err)
		}
		a.ExpiresAt, a.AttestedAt = time.Unix(exp, 0), time.Unix(att, 0)
		out = append(out, a)
	}
	return out, rows.Err()
}

// metaInt and bumpMeta read and move the counters of the meta table (the
// config version, the endpoints revision).
func metaInt(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, key string) (int64, error) {
	var v int64
	err := q.QueryRowContext(ctx, `SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func bumpMeta(ctx context.Context, tx *sql.Tx, key string) (int64, error) {
	var v int64
	err := tx.QueryRowContext(ctx, `INSERT INTO meta (key, value) VALUES (?, 1)
		ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
		RETURNING CAST(value AS INTEGER)`, key).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("registry: %s: %w", key, err)
	}
	return v, nil
}
