package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/internal/rsyslogtest"
)

// rfc5424Line is one message as rsyslog's RSYSLOG_SyslogProtocol23Format
// writes it: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID, Sigil's
// one SD-ELEMENT, then the BOM and the record's JSON. The SD values of
// this test's records (SPIFFE IDs, hex, UUIDs) hold no escaped "]".
var rfc5424Line = regexp.MustCompile(`^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) \[sigil@32473((?: [a-z_]+="[^"]*")+)\] \x{FEFF}(\{.*\})$`)

var sdParam = regexp.MustCompile(` ([a-z_]+)="([^"]*)"`)

// TestAuditExportToRsyslogThroughServer: the server's --audit-export
// syslog+tcp:// sends the mesh's one audit stream to Debian's rsyslogd
// on loopback; the decisions of traffic through the mesh and the CA's
// events arrive as RFC 5424 lines (PRI of facility authpriv, MSGID the
// record's type, the sigil@32473 structured data naming writer, seq and
// hash, the record's JSON after the BOM passing its hash), and
// `sigil audit verify` passes over the file exporter's output of the same
// run.
func TestAuditExportToRsyslogThroughServer(t *testing.T) {
	t.Parallel()
	rcv := rsyslogtest.Start(t)
	exportDir := t.TempDir()
	exportFile := filepath.Join(exportDir, "audit.jsonl")
	m, webAgent, apiAgent, policyDir, webApp, apiApp := startAuditMesh(t,
		"--audit-export", "syslog+tcp://"+rcv.TCPAddr+"?hostname=sigil-e2e",
		"--audit-export", "file://"+exportFile)
	api := harness.StartProxy(t, apiAgent, "api", apiApp, policyDir, "--audit-spool-dir", filepath.Join(m.Dir, "api-spool"))
	web := harness.StartProxy(t, webAgent, "web", webApp, policyDir, "--upstream", "api="+api.Inbound+"@"+apiSA,
		"--audit-spool-dir", filepath.Join(m.Dir, "web-spool"))

	allowed, denied := 0, 0
	for i := range 12 {
		method := http.MethodGet
		if i%3 == 2 {
			method = http.MethodDelete // denied by the policy
		}
		req, _ := http.NewRequest(method, "http://"+web.Outbound+"/hello", nil)
		req.Host = "api"
		req.Header.Set("Authorization", "Bearer syslog-e2e-secret-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			allowed++
		case http.StatusForbidden:
			denied++
		default:
			t.Fatalf("%s /hello: %d", method, resp.StatusCode)
		}
	}

	// rsyslogd signals nothing but its file: wait for enough lines, then
	// for the ones this test is about.
	type msg struct {
		pri   int
		host  string
		msgID string
		sd    map[string]string
		rec   auditstream.Record
	}
	var msgs []msg
	want := allowed + denied + 2 // the decisions and the two issuances at least
	for n := want; ; n++ {
		msgs = msgs[:0]
		decisions, issued := 0, map[string]bool{}
		for _, l := range rcv.Lines(t, n) {
			p := rfc5424Line.FindStringSubmatch(l)
			if p == nil {
				t.Fatalf("rsyslog wrote a line that is not RFC 5424 with Sigil's structured data: %q", l)
			}
			pri, _ := strconv.Atoi(p[1])
			mm := msg{pri: pri, host: p[3], msgID: p[6], sd: map[string]string{}}
			for _, kv := range sdParam.FindAllStringSubmatch(p[7], -1) {
				mm.sd[kv[1]] = kv[2]
			}
			if err := json.Unmarshal([]byte(p[8]), &mm.rec); err != nil {
				t.Fatalf("MSG is not a record: %v: %q", err, p[8])
			}
			if err := auditstream.Check(mm.rec); err != nil {
				t.Fatalf("a record that arrived at rsyslog fails its hash: %v", err)
			}
			msgs = append(msgs, mm)
			if mm.rec.Sigil.Type == auditstream.TypeDecision && strings.HasPrefix(mm.rec.Sigil.Writer, apiSA+"#") {
				decisions++
			}
			if mm.rec.Sigil.Type == "x509svid.issued" {
				issued[mm.rec.Sigil.Subject] = true
			}
		}
		if decisions >= allowed+denied && issued[webSA] && issued[apiSA] {
			if decisions != allowed+denied {
				t.Fatalf("%d decisions of api's sidecar at rsyslog, %d requests answered", decisions, allowed+denied)
			}
			break
		}
	}

	gotDeny := 0
	for _, mm := range msgs {
		r := mm.rec
		if mm.host != "sigil-e2e" || mm.msgID != r.Sigil.Type {
			t.Fatalf("header: host %q msgid %q for a %s record", mm.host, mm.msgID, r.Sigil.Type)
		}
		if mm.pri/8 != 10 { // authpriv, the default facility
			t.Fatalf("PRI %d: facility %d, want authpriv (10)", mm.pri, mm.pri/8)
		}
		if mm.sd["writer"] != r.Sigil.Writer || mm.sd["seq"] != strconv.FormatInt(r.Sigil.Seq, 10) ||
			mm.sd["hash"] != r.Sigil.Hash || mm.sd["decision_id"] != r.DecisionID || mm.sd["type"] != r.Sigil.Type {
			t.Fatalf("structured data %v does not match the record %+v", mm.sd, r.Sigil)
		}
		if r.Sigil.Type == auditstream.TypeDecision {
			if strings.Contains(string(r.Input), "syslog-e2e-secret-token") {
				t.Fatalf("a token reached rsyslog: %s", r.Input)
			}
			if string(r.Result) == "false" && strings.HasPrefix(r.Sigil.Writer, apiSA+"#") {
				gotDeny++
				if mm.pri%8 != 5 {
					t.Fatalf("a denied decision with severity %d, want notice (5)", mm.pri%8)
				}
			}
		}
	}
	if gotDeny != denied {
		t.Fatalf("%d denials at rsyslog, %d requests denied", gotDeny, denied)
	}

	// The file exporter of the same server holds the same stream; its
	// chains verify. The runners are independent: wait until the file
	// holds as many records as rsyslog got.
	// The file is the only signal: poll it.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(exportFile)
		if err == nil && strings.Count(string(b), "\n") >= len(msgs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file exporter holds fewer records than rsyslog got (%d) after 15 s: %v", len(msgs), err)
		}
	}
	out := harness.MustRun(t, "sigil", "audit", "verify", exportFile)
	if strings.Contains(out, "BROKEN") || !strings.Contains(out, "writer "+apiSA+"#") {
		t.Fatalf("sigil audit verify over the file exporter's output:\n%s", out)
	}
}
