package traffic

import (
	"encoding/csv"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// corpusDir is the corpus of Istio YAML real users write (DESIGN: CI has
// ../shared beside the checkout).
const corpusDir = "../../shared/corpus/istio"

// corpusDoc is one row of the corpus's INDEX.tsv.
type corpusDoc struct {
	file, upstream, kind, name, verdict, message string
}

func readCorpus(t *testing.T) []corpusDoc {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir, "INDEX.tsv"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("no corpus at %s (CI has ../shared beside the checkout)", corpusDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma, r.LazyQuotes, r.FieldsPerRecord = '\t', true, -1
	var out []corpusDoc
	for i := 0; ; i++ {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			continue
		}
		for len(rec) < 7 {
			rec = append(rec, "")
		}
		out = append(out, corpusDoc{rec[0], rec[2], rec[3], rec[4], rec[5], rec[6]})
	}
	return out
}

// unsupportedField is how a refusal names the field Sigil does not
// support (or a rule it applies), so a user knows what to change.
var unsupportedField = regexp.MustCompile(`(spec|metadata)\.[A-Za-z0-9_.\[\]]+|field "[^"]+"`)

// Every document Istio accepts is accepted, or refused by a message that
// names the field; nothing Istio refuses is accepted. Documents of one
// upstream file are applied together (a VirtualService may route to the
// subsets of a DestinationRule beside it), except Istio's validation
// fixtures: each document of those files is a case of its own (several
// are one resource, bookinfo-ratings, in alternative forms), validated
// alone as Istio's own test does.
func TestIstioCorpus(t *testing.T) {
	docs := readCorpus(t)
	byUpstream := map[string][]corpusDoc{}
	for _, d := range docs {
		group := d.upstream
		if strings.HasPrefix(d.file, "istio-validation-fixtures/") {
			group = d.file
		}
		byUpstream[group] = append(byUpstream[group], d)
	}
	accepted, refusedNamed, total, istioAccepts := 0, 0, 0, 0
	reasons := map[string]int{}
	for _, group := range byUpstream {
		var rs []Resource
		errOf := map[string]error{}
		for _, d := range group {
			data, err := os.ReadFile(filepath.Join(corpusDir, d.file))
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := Parse(data, d.file)
			if err == nil {
				for _, r := range parsed {
					if err = Validate(r); err != nil {
						break
					}
				}
			}
			if err != nil {
				errOf[d.file] = err
				continue
			}
			rs = append(rs, parsed...)
		}
		refErr := CheckReferences(rs)
		for _, d := range group {
			total++
			err := errOf[d.file]
			if err == nil && refErr != nil && strings.Contains(refErr.Error(), d.kind+" ") && strings.Contains(refErr.Error(), "/"+d.name+":") {
				err = refErr
			}
			switch {
			case d.verdict == "reject" && err == nil:
				t.Errorf("%s: Istio refuses it (%s) and Sigil accepts it", d.file, d.message)
			case d.verdict == "reject":
				t.Logf("%s: refused as Istio does: %v", d.file, err)
			case err == nil:
				istioAccepts++
				accepted++
			default:
				istioAccepts++
				msg := err.Error()
				if !unsupportedField.MatchString(msg) {
					t.Errorf("%s: Istio accepts it; Sigil refuses it without naming the field: %v", d.file, err)
					continue
				}
				refusedNamed++
				reasons[firstLine(msg)]++
			}
		}
	}
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return reasons[keys[i]] > reasons[keys[j]] })
	for _, k := range keys {
		t.Logf("%3d × %s", reasons[k], k)
	}
	t.Logf("corpus: %d documents; of the %d Istio accepts, Sigil accepts %d and refuses %d naming the field", total, istioAccepts, accepted, refusedNamed)
	if accepted < minCorpusAccepted {
		t.Errorf("Sigil accepts %d of the %d documents Istio accepts; want at least %d", accepted, istioAccepts, minCorpusAccepted)
	}
}

// minCorpusAccepted is the floor the corpus test holds: it only rises.
const minCorpusAccepted = 154

// firstLine is the reason of a refusal without the file and resource, so
// alike refusals count together.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if i := strings.LastIndex(s, ": spec."); i >= 0 {
		s = s[i+2:]
	} else if i := strings.Index(s, "field "); i >= 0 {
		s = s[i:]
	}
	return regexp.MustCompile(`\[\d+\]`).ReplaceAllString(s, "[]")
}
