package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-mesh/sigil/audit"
	"github.com/sigil-mesh/sigil/e2e/harness"
	"github.com/sigil-mesh/sigil/server"
)

// kill -9 of the server during a burst of `entry create` used to leave
// entry.created records for entries never created, unmarked. Now each is
// an intent: after a restart every intent is settled (committed or
// aborted), and the committed entry.created records are exactly the
// entries in the store.
func TestAuditReconcilesAfterCrashKill9(t *testing.T) {
	m := harness.StartMesh(t)
	var created atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := "spiffe://example.org/burst/" + strconv.Itoa(w) + "/" + strconv.Itoa(i)
				if _, err := harness.Run(t, "sigil-server", "entry", "create", "--data-dir", m.DataDir, "--parent-id", harness.AgentID("node1"), "--spiffe-id", id, "--selector", "unix:uid:1"); err == nil {
					created.Add(1)
				}
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for created.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // counting the burst's successes; no signal to await
	}
	m.Server.Signal(syscall.SIGKILL)
	m.Server.Wait(10 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d entries created before kill -9", created.Load())

	m.StartServer()
	entries, err := server.NewAdminClient(server.AdminSocket(m.DataDir)).ListEntries(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	inStore := map[string]bool{}
	for _, e := range entries {
		inStore[e.ID] = true
	}

	trail := filepath.Join(m.DataDir, "audit.log")
	intents := map[int64]audit.Event{}
	settled := map[int64]string{}
	f, err := os.Open(trail)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if e.Intent {
			intents[e.Seq] = e
		}
		if e.Type == audit.ActionCommitted || e.Type == audit.ActionAborted {
			first, _ := strconv.ParseInt(e.Details[audit.DetailIntentSeq], 10, 64)
			n, _ := strconv.ParseInt(e.Details[audit.DetailIntentCount], 10, 64)
			for seq := first; seq < first+n; seq++ {
				settled[seq] = e.Type
			}
		}
	}
	committed := map[string]bool{}
	for seq, e := range intents {
		outcome, ok := settled[seq]
		if !ok {
			t.Errorf("intent %d (%s) has no commit or abort record", seq, e.Type)
		}
		if e.Type == audit.EntryCreated && outcome == audit.ActionCommitted {
			committed[e.Details["entry_id"]] = true
		}
	}
	for id := range inStore {
		if !committed[id] {
			t.Errorf("entry %s is in the store without a committed entry.created", id)
		}
	}
	for id := range committed {
		if !inStore[id] {
			t.Errorf("entry.created for %s is committed but the entry is not in the store", id)
		}
	}
	if len(inStore) == 0 {
		t.Fatal("no entry was created before the kill; the test proved nothing")
	}
	out := harness.MustRun(t, "sigil", "audit", "verify", trail)
	if !strings.Contains(out, ": ok,") || !strings.Contains(out, "0 pending") {
		t.Fatalf("audit verify: %s", out)
	}
	t.Log(strings.TrimSpace(out))
}
