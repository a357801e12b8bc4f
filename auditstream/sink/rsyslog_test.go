package sink

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/auditstream"
)

// needRsyslog returns rsyslogd's path; without it the test skips, except
// under CI (.ci/run installs Debian's rsyslog and rsyslog-gnutls).
func needRsyslog(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("rsyslogd")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("rsyslogd not installed; .ci/run installs Debian's rsyslog and rsyslog-gnutls")
	}
	t.Skip("rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls; .ci/run does)")
	return ""
}

// testCA writes a CA and a server certificate for 127.0.0.1 into dir and
// returns the files' paths.
func testCA(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigil test syslog CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{caFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// waitFile waits for path to exist with content, as rsyslogd writes its
// listen port files once listening; it fails after d or when exited fires.
func waitFile(t *testing.T, path string, d time.Duration, exited <-chan struct{}) string {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b))
		}
		select {
		case <-tick.C:
		case <-exited:
			t.Fatalf("rsyslogd exited before writing %s", path)
		case <-deadline:
			t.Fatalf("%s not written within %s", path, d)
		}
	}
}

// TestSyslogToRsyslog: Debian's rsyslogd, started on loopback ports with
// imtcp plain and with TLS (the gtls driver), receives the sink's records
// and writes them with RSYSLOG_SyslogProtocol23Format; every record
// arrives as an RFC 5424 line with its PRI, MSGID, app-name, hostname and
// structured data.
func TestSyslogToRsyslog(t *testing.T) {
	rsyslogd := needRsyslog(t)
	dir := t.TempDir()
	caFile, certFile, keyFile := testCA(t, dir)
	out := filepath.Join(dir, "out.log")
	conf := fmt.Sprintf(`global(workDirectory=%[1]q maxMessageSize="64k")
module(load="imtcp")
input(type="imtcp" port="0" address="127.0.0.1" listenPortFileName=%[2]q ruleset="out")
input(type="imtcp" port="0" address="127.0.0.1" listenPortFileName=%[3]q ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.caFile=%[4]q streamDriver.certFile=%[5]q streamDriver.keyFile=%[6]q)
ruleset(name="out") { action(type="omfile" file=%[7]q template="RSYSLOG_SyslogProtocol23Format") }
`, dir, filepath.Join(dir, "tcp.port"), filepath.Join(dir, "tls.port"), caFile, certFile, keyFile, out)
	confFile := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rsyslogd, "-n", "-f", confFile, "-i", filepath.Join(dir, "rsyslogd.pid"))
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", logs.String())
		}
	})
	tcpPort := waitFile(t, filepath.Join(dir, "tcp.port"), 10*time.Second, exited)
	tlsPort := waitFile(t, filepath.Join(dir, "tls.port"), 10*time.Second, exited)

	recs := sealed(t, "spiffe://example.org/ns/a/sa/web#1", 6)
	recs[1].Result = json.RawMessage("false")
	recs[2].Sigil.Type, recs[2].Path = "x509svid.refused", auditstream.PathEvent("x509svid.refused")
	recs[3].DecisionID = `odd"id\with]brackets`
	reseal(t, recs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	specs := []string{
		"syslog+tcp://127.0.0.1:" + tcpPort + "?facility=local3&hostname=node-tcp",
		"syslog+tls://127.0.0.1:" + tlsPort + "?facility=local3&hostname=node-tls&ca=" + caFile,
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

	lines := waitLines(t, out, len(recs), exited)
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

// waitLines waits until path holds n lines and returns them.
func waitLines(t *testing.T, path string, n int, exited <-chan struct{}) []string {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	for {
		var lines []string
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			f.Close()
		}
		if len(lines) >= n {
			return lines
		}
		select {
		case <-tick.C:
		case <-exited:
			t.Fatalf("rsyslogd exited; %d of %d lines written", len(lines), n)
		case <-deadline:
			t.Fatalf("%d of %d lines in %s after 15s: %q", len(lines), n, path, lines)
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
