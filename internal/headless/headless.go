// Package headless drives Debian's chromium in headless mode for tests of
// the dashboard: the DOM after the page's JavaScript ran (--dump-dom
// after a --virtual-time-budget), and screenshots. Each run gets its own
// profile in a temporary directory and no network but what the page asks
// for: background networking, component updates and sync are off, so a
// test never reaches the internet.
package headless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Names are the executables tried, in order.
var Names = []string{"chromium", "chromium-browser", "google-chrome"}

// ErrNoBrowser is returned by Find when no browser is on PATH.
var ErrNoBrowser = errors.New("headless: no chromium on PATH (Debian: apt-get install chromium)")

// Find returns the path of the first browser of Names on PATH.
func Find() (string, error) {
	for _, n := range Names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", ErrNoBrowser
}

// Options tune a run. Budget is the virtual time the page gets (timers
// and fetches run within it); Width and Height the window in pixels.
type Options struct {
	Budget        time.Duration
	Width, Height int
}

func (o Options) args(profile string) []string {
	if o.Budget == 0 {
		o.Budget = 5 * time.Second
	}
	if o.Width == 0 || o.Height == 0 {
		o.Width, o.Height = 1280, 800
	}
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile,
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--no-proxy-server", "--hide-scrollbars",
		"--window-size=" + strconv.Itoa(o.Width) + "," + strconv.Itoa(o.Height),
		"--virtual-time-budget=" + strconv.FormatInt(o.Budget.Milliseconds(), 10),
	}
}

// DumpDOM loads url and returns the serialized DOM once the virtual time
// budget has run out.
func DumpDOM(ctx context.Context, url string, o Options) (string, error) {
	out, err := run(ctx, o, "--dump-dom", url)
	return string(out), err
}

// Screenshot loads url and writes a PNG of the window to path.
func Screenshot(ctx context.Context, url, path string, o Options) error {
	_, err := run(ctx, o, "--screenshot="+path, url)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		return fmt.Errorf("headless: no screenshot at %s: %v", path, err)
	}
	return nil
}

func run(ctx context.Context, o Options, extra ...string) ([]byte, error) {
	bin, err := Find()
	if err != nil {
		return nil, err
	}
	profile, err := os.MkdirTemp("", "sigil-headless-")
	if err != nil {
		return nil, fmt.Errorf("headless: profile dir: %w", err)
	}
	defer os.RemoveAll(profile)
	cmd := exec.CommandContext(ctx, bin, append(o.args(profile), extra...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Dir = profile
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("headless: %s: %w; stderr: %s", bin, err, lastBytes(stderr.Bytes(), 2000))
	}
	return stdout.Bytes(), nil
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
