package traffic

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"unicode/utf8"
)

// MaxBundleBytes bounds what a Policy's bundle expands to (its .rego
// files and the rest it carries): a small archive must not inflate into
// more than the sidecar will hold.
const MaxBundleBytes = 4 << 20

// readBundle reads an OPA bundle (a gzipped tar, as `opa build` writes
// it) and returns its .rego files by path (without a leading "/"). OPA's
// .manifest and .signatures.json are skipped (Sigil neither roots nor
// verifies bundles: the server accepted the Policy); data files
// (data.json, data.yaml) are refused, since a Sigil policy reads input
// only; so are links and paths that leave the bundle.
func readBundle(b []byte) (map[string]string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("traffic: not a gzipped tar (an OPA bundle, as opa build writes): %w", err)
	}
	tr := tar.NewReader(io.LimitReader(zr, MaxBundleBytes+1))
	out := map[string]string{}
	total := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("traffic: reading the bundle (at most %d bytes expanded): %w", MaxBundleBytes, err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		switch {
		case h.Typeflag == tar.TypeDir:
			continue
		case h.Typeflag != tar.TypeReg:
			return nil, fmt.Errorf("traffic: %q: only regular files are read from a bundle", h.Name)
		case name == ".manifest" || strings.HasSuffix(name, ".signatures.json"):
			continue
		case strings.HasSuffix(name, "data.json") || strings.HasSuffix(name, "data.yaml"):
			return nil, fmt.Errorf("traffic: %q: a Sigil policy reads its input only; bundle data files are not supported", h.Name)
		case !strings.HasSuffix(name, ".rego"):
			return nil, fmt.Errorf("traffic: %q: a bundle holds .rego files (and .manifest)", h.Name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("traffic: %q is in the bundle twice", name)
		}
		src, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("traffic: reading %q (a bundle expands to at most %d bytes): %w", h.Name, MaxBundleBytes, err)
		}
		if total += len(src); total > MaxBundleBytes {
			return nil, fmt.Errorf("traffic: the bundle expands to more than %d bytes", MaxBundleBytes)
		}
		if !utf8.Valid(src) {
			return nil, fmt.Errorf("traffic: %q is not UTF-8", h.Name)
		}
		out[name] = string(src)
	}
	return out, nil
}
