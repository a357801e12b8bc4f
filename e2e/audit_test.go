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

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/e2e/harness"
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
	entries, err := adminv1.NewAdminClient(adminv1.AdminSocket(m.DataDir)).ListEntries(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	inStore := map[string]bool{}
	for _, e := range entries {
		inStore[e.ID] = true
	}

	// The trail read as its consumers read it: JSON lines.
	type record struct {
		Seq     int64             `json:"seq"`
		Type    string            `json:"type"`
		Intent  bool              `json:"intent"`
		Details map[string]string `json:"details"`
	}
	trail := filepath.Join(m.DataDir, "audit.log")
	var records []record
	settled := map[int64]string{}
	f, err := os.Open(trail)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e record
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		records = append(records, e)
		if e.Type == "action.committed" || e.Type == "action.aborted" {
			first, _ := strconv.ParseInt(e.Details["intent_seq"], 10, 64)
			n, _ := strconv.ParseInt(e.Details["intent_count"], 10, 64)
			for seq := first; seq < first+n; seq++ {
				settled[seq] = e.Type
			}
		}
	}
	// Every entry.created is settled, and its outcome is the store's.
	recorded := map[string]bool{}
	for _, e := range records {
		if e.Intent && settled[e.Seq] == "" {
			t.Errorf("intent %d (%s) has no commit or abort record", e.Seq, e.Type)
		}
		if e.Type != "entry.created" {
			continue
		}
		id := e.Details["entry_id"]
		recorded[id] = true
		switch want := map[bool]string{true: "action.committed", false: "action.aborted"}[inStore[id]]; {
		case !e.Intent || settled[e.Seq] == "":
			t.Errorf("entry.created %d for %s (in store: %v) is not marked committed or aborted", e.Seq, id, inStore[id])
		case settled[e.Seq] != want:
			t.Errorf("entry.created %d for %s is %s, but in store: %v", e.Seq, id, settled[e.Seq], inStore[id])
		}
	}
	for id := range inStore {
		if !recorded[id] {
			t.Errorf("entry %s is in the store without an entry.created record", id)
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
