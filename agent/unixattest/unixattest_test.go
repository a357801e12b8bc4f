package unixattest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"testing"

	"github.com/sigil-mesh/sigil/selector"
)

func TestAttestSelf(t *testing.T) {
	var a Attestor
	info := AuthInfo{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	sels := selector.NewSet(a.Attest(context.Background(), info)...)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := []selector.Selector{
		selector.Unix(selector.UnixUID, strconv.Itoa(os.Getuid())),
		selector.Unix(selector.UnixGID, strconv.Itoa(os.Getgid())),
		selector.Unix(selector.UnixPath, exe),
		selector.Unix(selector.UnixSHA256, hex.EncodeToString(sum[:])),
	}
	if !sels.Includes(want) {
		t.Fatalf("selectors %v do not include %v", sels, want)
	}
	// Every selector the attestor makes must parse: entries are written in
	// the same syntax.
	for s := range sels {
		if _, err := selector.Parse(s.String()); err != nil {
			t.Errorf("attestor made %q, which does not parse: %v", s, err)
		}
	}
	// A process that is gone yields uid and gid only.
	gone := a.Attest(context.Background(), AuthInfo{PID: 1 << 30, UID: 4242, GID: 4242})
	for _, s := range gone {
		if s.Value[:4] == "path" || s.Value[:6] == "sha256" {
			t.Fatalf("selectors for a missing process: %v", gone)
		}
	}
}
