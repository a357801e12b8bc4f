package registry

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sigil-mesh/sigil/selector"
)

// Entry grants SPIFFEID to the workloads with all of Selectors on the node
// whose agent is ParentID.
type Entry struct {
	ID        string              `json:"id"`
	SPIFFEID  string              `json:"spiffe_id"`
	ParentID  string              `json:"parent_id"`
	Selectors []selector.Selector `json:"selectors"`
	X509TTL   time.Duration       `json:"x509_ttl"`
	// Services are the services whose endpoints a sidecar with this
	// identity may register. Empty: the service named by the ID's service
	// account (spiffe://td/ns/<ns>/sa/<service>), as in Kubernetes.
	Services  []string      `json:"services,omitempty"`
	JWTTTL    time.Duration `json:"jwt_ttl"`
	Source    string        `json:"source"`
	Revision  int64         `json:"revision"`
	CreatedAt time.Time     `json:"created_at"`
}

// Entry sources.
const (
	SourceLocal = "local"
	SourceK8s   = "k8s"
)

func encodeSelectors(ss []selector.Selector) string {
	parts := make([]string, len(ss))
	for i, s := range selector.Sort(ss) {
		parts[i] = s.String()
	}
	b, _ := json.Marshal(parts)
	return string(b)
}

func decodeSelectors(s string) ([]selector.Selector, error) {
	var parts []string
	if err := json.Unmarshal([]byte(s), &parts); err != nil {
		return nil, err
	}
	return selector.ParseAll(parts)
}

// NewEntryID returns a random entry ID.
func NewEntryID() string {
	var id [16]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(id[:])
}

// CreateEntry stores e, giving it a new ID unless it has one. An entry with the same SPIFFE ID,
// parent and selectors already there is ErrExists.
func (s *Store) CreateEntry(ctx context.Context, e Entry, now time.Time) (Entry, error) {
	if e.ID == "" {
		e.ID = NewEntryID()
	}
	e.CreatedAt = now.UTC().Truncate(time.Second)
	e.Selectors = selector.Sort(append([]selector.Selector(nil), e.Selectors...))
	if e.Source == "" {
		e.Source = SourceLocal
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	if e.Revision, err = bumpMeta(ctx, tx, "revision"); err != nil {
		return Entry{}, err
	}
	services, _ := json.Marshal(e.Services)
	_, err = tx.ExecContext(ctx, `INSERT INTO entries (id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, source, revision, created_at, services)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.SPIFFEID, e.ParentID, encodeSelectors(e.Selectors), int64(e.X509TTL/time.Second), int64(e.JWTTTL/time.Second), e.Source, e.Revision, e.CreatedAt.Unix(), string(services))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return Entry{}, fmt.Errorf("%w: an entry for %s under %s with these selectors", ErrExists, e.SPIFFEID, e.ParentID)
		}
		return Entry{}, fmt.Errorf("registry: creating entry: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Entry{}, fmt.Errorf("registry: creating entry: %w", err)
	}
	return e, nil
}

// DeleteEntry removes the entry with this ID and returns what it was.
func (s *Store) DeleteEntry(ctx context.Context, id string) (Entry, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	e, err := scanEntry(tx.QueryRowContext(ctx, entryColumns+` WHERE id = ?`, id))
	if err != nil {
		return Entry{}, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM entries WHERE id = ?`, id); err != nil {
		return Entry{}, fmt.Errorf("registry: deleting entry %s: %w", id, err)
	}
	if _, err := bumpMeta(ctx, tx, "revision"); err != nil {
		return Entry{}, err
	}
	if err := tx.Commit(); err != nil {
		return Entry{}, fmt.Errorf("registry: deleting entry %s: %w", id, err)
	}
	return e, nil
}

const entryColumns = `SELECT id, spiffe_id, parent_id, selectors, x509_ttl, jwt_ttl, source, revision, created_at, services FROM entries`

type rowScanner interface{ Scan(dest ...any) error }

func scanEntry(row rowScanner) (Entry, error) {
	var e Entry
	var sels, services string
	var x509TTL, jwtTTL, created int64
	err := row.Scan(&e.ID, &e.SPIFFEID, &e.ParentID, &sels, &x509TTL, &jwtTTL, &e.Source, &e.Revision, &created, &services)
	if errors.Is(err, sql.ErrNoRows) {
		return Entry{}, fmt.Errorf("%w: entry", ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("registry: reading entry: %w", err)
	}
	if e.Selectors, err = decodeSelectors(sels); err != nil {
		return Entry{}, fmt.Errorf("registry: entry %s selectors: %w", e.ID, err)
	}
	e.X509TTL, e.JWTTTL = time.Duration(x509TTL)*time.Second, time.Duration(jwtTTL)*time.Second
	if err := json.Unmarshal([]byte(services), &e.Services); err != nil {
		return Entry{}, fmt.Errorf("registry: entry %s services: %w", e.ID, err)
	}
	e.CreatedAt = time.Unix(created, 0).UTC()
	return e, nil
}

// GetEntry returns the entry with this ID.
func (s *Store) GetEntry(ctx context.Context, id string) (Entry, error) {
	return scanEntry(s.db.QueryRowContext(ctx, entryColumns+` WHERE id = ?`, id))
}

// ListEntries returns the entries whose parent is parentID, or every entry
// when parentID is "". It also returns the revision they were read at.
func (s *Store) ListEntries(ctx context.Context, parentID string) ([]Entry, int64, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("registry: %w", err)
	}
	defer tx.Rollback()
	rev, err := metaInt(ctx, tx, "revision")
	if err != nil {
		return nil, 0, fmt.Errorf("registry: revision: %w", err)
	}
	q, args := entryColumns+` ORDER BY spiffe_id, id`, []any{}
	if parentID != "" {
		q, args = entryColumns+` WHERE parent_id = ? ORDER BY spiffe_id, id`, []any{parentID}
	}
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, fmt.Errorf("registry: listing entries: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("registry: listing entries: %w", err)
	}
	return out, rev, nil
}
