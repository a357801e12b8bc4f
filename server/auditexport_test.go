package server

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/auditstream/spool"
	"github.com/sigil-mesh/sigil/server/registry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sealedLines are n decision records of writer's chain, as JSON lines.
func sealedLines(t *testing.T, writer string, n int) [][]byte {
	t.Helper()
	c := auditstream.NewChain(writer, 0, "")
	out := make([][]byte, n)
	for i := range out {
		r := auditstream.Record{DecisionID: auditstream.NewID(), Path: auditstream.PathDecision, Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}
		if err := c.Seal(&r); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// An agent passes on audit records of its own workloads only: a record
// whose writer is another node's workload, an unknown identity or the
// server itself refuses the batch whole, naming the writer; re-sent
// records are not spooled twice.
func TestAuditExportTrustsAgentForItsWorkloadsOnly(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), spool.Options{Writer: "spiffe://example.org/sigil/server#1", Consumers: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{auditOut: &auditStream{sp: sp}}
	entries := []registry.Entry{{SPIFFEID: statsReviews, ParentID: agent1}}
	own := sealedLines(t, statsReviews+"#a1", 3)
	for _, tt := range []struct {
		name    string
		records [][]byte
		code    codes.Code
		naming  string
		new     int64
	}{
		{name: "own workload", records: own[:2], new: 2},
		{name: "re-sent after a crash", records: own, new: 1},
		{name: "another node's workload", records: append(sealedLines(t, statsOther+"#b1", 1), own...), code: codes.PermissionDenied, naming: statsOther},
		{name: "no instance", records: sealedLines(t, statsReviews, 1), code: codes.PermissionDenied, naming: statsReviews},
		{name: "the server's chain", records: sealedLines(t, "spiffe://example.org/sigil/server#1", 1), code: codes.PermissionDenied, naming: "sigil/server"},
		{name: "not JSON", records: [][]byte{[]byte("{")}, code: codes.InvalidArgument, naming: "JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.acceptAudit(agent1, entries, tt.records)
			if tt.code != codes.OK {
				if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.naming) {
					t.Fatalf("err %v, want %s naming %s", err, tt.code, tt.naming)
				}
				return
			}
			if err != nil || resp.Accepted != tt.new {
				t.Fatalf("%v %v, want %d new", resp, err, tt.new)
			}
		})
	}
	if st := sp.Stats(); st.Appended != 3 {
		t.Fatalf("%d records spooled, want 3", st.Appended)
	}
}

// A sidecar writes decisions and gap records only: a record of its own
// chain that passes for a CA event (an issuance, a token use: type, path
// or the CA's subject and details) is refused whole, so a workload cannot
// forge the CA's trail in the stream a SIEM reads.
func TestAuditExportRefusesForgedRecordKinds(t *testing.T) {
	sp, err := spool.Open(t.TempDir(), spool.Options{Writer: "spiffe://example.org/sigil/server#1", Consumers: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{auditOut: &auditStream{sp: sp}}
	entries := []registry.Entry{{SPIFFEID: statsReviews, ParentID: agent1}}
	forged := func(edit func(*auditstream.Record)) [][]byte {
		r := auditstream.Record{DecisionID: auditstream.NewID(), Path: auditstream.PathDecision, Sigil: auditstream.Meta{Type: auditstream.TypeDecision}}
		edit(&r)
		c := auditstream.NewChain(statsReviews+"#a1", 0, "")
		if err := c.Seal(&r); err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		return [][]byte{b}
	}
	for _, tt := range []struct {
		name string
		edit func(*auditstream.Record)
		ok   bool
	}{
		{"decision", func(*auditstream.Record) {}, true},
		{"gap", func(r *auditstream.Record) {
			r.Path, r.Sigil.Type, r.Sigil.Lost = auditstream.PathEvent(auditstream.TypeGap), auditstream.TypeGap, 3
		}, true},
		{"an issuance", func(r *auditstream.Record) {
			r.Path, r.Sigil.Type, r.Sigil.Subject = auditstream.PathEvent("x509svid.issued"), "x509svid.issued", statsOther
		}, false},
		{"a decision on the CA's path", func(r *auditstream.Record) { r.Path = auditstream.PathEvent("token.used") }, false},
		{"a decision with the CA's details", func(r *auditstream.Record) { r.Sigil.Details = map[string]string{"serial": "1"} }, false},
		{"a decision with a subject", func(r *auditstream.Record) { r.Sigil.Subject = statsOther }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.acceptAudit(agent1, entries, forged(tt.edit))
			if tt.ok != (err == nil) {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if err != nil && status.Code(err) != codes.PermissionDenied {
				t.Fatalf("err %v, want PermissionDenied", err)
			}
		})
	}
}

// A refused --audit-export is named without its password.
func TestAuditExportFlagErrorsHideThePassword(t *testing.T) {
	spec := "https://sigil:s3cret-pw@logs.example.org/logs"
	for _, c := range []Config{
		{AuditExport: []string{spec, spec}},
		{AuditExport: []string{spec + "?colour=red"}},
	} {
		errs := checkAuditExport(c)
		if len(errs) == 0 {
			t.Fatalf("%v: accepted", c.AuditExport)
		}
		for _, err := range errs {
			if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "logs.example.org") {
				t.Errorf("error %q shows the password or does not name the exporter", err)
			}
		}
	}
}

// A server without --audit-export discards what agents send and says so
// in the answer (the sidecars then stop recording); one with a stream
// never says so, not even for an empty batch (a paused sidecar's probe).
func TestAuditExportAnswerSaysWhetherDiscarded(t *testing.T) {
	entries := []registry.Entry{{SPIFFEID: statsReviews, ParentID: agent1}}
	none := &Server{auditOut: &auditStream{}, log: slog.New(slog.DiscardHandler)}
	for _, recs := range [][][]byte{sealedLines(t, statsReviews+"#a1", 2), nil} {
		resp, err := none.acceptAudit(agent1, entries, recs)
		if err != nil || !resp.GetDiscarded() {
			t.Fatalf("no stream, %d records: %v %v, want discarded", len(recs), resp, err)
		}
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{Writer: "spiffe://example.org/sigil/server#1", Consumers: []string{"x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	kept := &Server{auditOut: &auditStream{sp: sp}}
	for _, recs := range [][][]byte{sealedLines(t, statsReviews+"#a1", 2), nil} {
		resp, err := kept.acceptAudit(agent1, entries, recs)
		if err != nil || resp.GetDiscarded() {
			t.Fatalf("with a stream, %d records: %v %v, want kept", len(recs), resp, err)
		}
	}
}
