package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
	"github.com/sigil-mesh/sigil/internal/rsyslogtest"
)

// TestSyslogToRsyslog: Debian's rsyslogd, started on loopback ports with
// imtcp plain and with TLS (the gtls driver), receives the sink's records
// and writes them with RSYSLOG_SyslogProtocol23Format; every record
// arrives as an RFC 5424 line with its PRI, MSGID, app-name, hostname and
// structured data, and its MSG passes the record's hash.
func TestSyslogToRsyslog(t *testing.T) {
	rcv := rsyslogtest.Start(t)
	recs := sealed(t, "spiffe://example.org/ns/a/sa/web#1", 6)
	recs[1].Result = json.RawMessage("false")
	recs[2].Sigil.Type, recs[2].Path = "x509svid.refused", auditstream.PathEvent("x509svid.refused")
	recs[3].DecisionID = `odd"id\with]brackets`
	reseal(t, recs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	specs := []string{
		"syslog+tcp://" + rcv.TCPAddr + "?facility=local3&hostname=node-tcp",
		"syslog+tls://" + rcv.TLSAddr + "?facility=local3&hostname=node-tls&ca=" + rcv.CAFile,
	}
	for i, spec := range specs {
		s, err := Open(spec)
		if err != nil {
			t.Fatal(err)
		}
		// Two batches on one connection: the second goes through the
		// check that the receiver has not closed it.
		if err := s.Export(ctx, recs[3*i:3*i+1]); err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if err := s.Export(ctx, recs[3*i+1:3*i+3]); err != nil {
			t.Fatalf("%s: second batch: %v", spec, err)
		}
		s.Close()
	}

	lines := rcv.Lines(t, len(recs))
	byID := map[string]rfc5424{}
	for _, l := range lines {
		m, err := parse5424(l)
		if err != nil {
			t.Fatalf("rsyslog wrote %q: %v", l, err)
		}
		byID[m.sd[SyslogSDID]["decision_id"]] = m
	}
	for i, r := range recs {
		m, ok := byID[r.DecisionID]
		if !ok {
			t.Errorf("record %s did not arrive; got %q", r.DecisionID, lines)
			continue
		}
		host := "node-tcp"
		if i >= 3 {
			host = "node-tls"
		}
		if m.host != host || m.app != "sigil" || m.msgID != r.Sigil.Type || m.pri != 19*8+severityOf(r) {
			t.Errorf("record %d: host %q app %q msgid %q pri %d; want %s sigil %s %d", i, m.host, m.app, m.msgID, m.pri, host, r.Sigil.Type, 19*8+severityOf(r))
		}
		sd := m.sd[SyslogSDID]
		if sd["writer"] != r.Sigil.Writer || sd["seq"] != fmt.Sprint(r.Sigil.Seq) || sd["hash"] != r.Sigil.Hash {
			t.Errorf("record %d: structured data %v", i, sd)
		}
		var back auditstream.Record
		if err := json.Unmarshal([]byte(strings.TrimPrefix(m.msg, utf8BOM)), &back); err != nil || back.Sigil.Hash != r.Sigil.Hash {
			t.Errorf("record %d: MSG %q is not the record's JSON: %v", i, m.msg, err)
		} else if err := auditstream.Check(back); err != nil {
			t.Errorf("record %d: the record that arrived fails its hash: %v", i, err)
		}
	}
}

// reseal seals recs again as one chain after a test changed them.
func reseal(t *testing.T, recs []auditstream.Record) {
	t.Helper()
	c := auditstream.NewChain(recs[0].Sigil.Writer, 0, "")
	for i := range recs {
		if err := c.Seal(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
}
