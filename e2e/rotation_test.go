package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// With 20-second SVIDs, 60 seconds of continuous load through the mesh see
// no failed request while every SVID rotates several times. Pooled
// HTTP/1.1 connections between the sidecars (retired before either
// certificate expires) and fresh mTLS handshakes (a CONNECT tunnel per
// request) are both exercised.
func TestProxyRotationUnderLoad(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("60 s of load")
	}
	mp := startMeshWithProxies(t, "--default-x509-ttl", "20s")
	proxyURL, _ := url.Parse("http://" + mp.web.Outbound)
	const (
		duration = 60 * time.Second
		maxReqs  = 300000 // bound on the loop, whatever the machine's speed
	)
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	stop := time.Now().Add(duration)
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
			for time.Now().Before(stop) && ok.Load()+failed.Load() < maxReqs {
				resp, err := c.Get("http://api/load")
				if err != nil {
					fail(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					fail(fmt.Errorf("status %d", resp.StatusCode))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(stop) && ok.Load()+failed.Load() < maxReqs {
			if err := tunnelGet(mp.web.Outbound); err != nil {
				fail(err)
				continue
			}
			ok.Add(1)
			time.Sleep(50 * time.Millisecond) // pace the handshakes: this worker is about rotation, not rate
		}
	}()
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	audit, err := os.ReadFile(filepath.Join(mp.m.DataDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{webSA, apiSA} {
		n := 0
		for _, line := range strings.Split(string(audit), "\n") {
			if strings.Contains(line, `"type":"x509svid.issued"`) && strings.Contains(line, `"subject":"`+id+`"`) {
				n++
			}
		}
		// The first SVID and at least four renewals at half of 20 s.
		if n < 5 {
			t.Fatalf("%s: only %d SVIDs issued during the run", id, n)
		}
	}
	t.Logf("%d requests, 0 failed", ok.Load())
}

// tunnelGet sends one HTTP request through a CONNECT tunnel (opaque TCP,
// a new mTLS connection between the sidecars each time).
func tunnelGet(outbound string) error {
	code, _, err := tunnelCall(outbound, "api:80", "/tunnel")
	if err == nil && code != 200 {
		err = fmt.Errorf("tunnelled request: %d", code)
	}
	return err
}
