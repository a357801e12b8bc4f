package grafana

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is one metric selector of a PromQL expression: the metric's
// name and the label names its matchers use.
type Selector struct {
	Metric string
	Labels []string
}

// Expr is what a PromQL expression asks of the series it reads: its
// selectors, and the label names its aggregations and vector matchings
// group by (by, without, on, ignoring, group_left, group_right), which
// some of those series must carry.
type Expr struct {
	Selectors []Selector
	Grouping  []string
}

// keywords are PromQL words that are neither metrics nor functions.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"Inf": true, "NaN": true, "inf": true, "nan": true,
}

// aggregations are PromQL's aggregation operators: their grouping clause
// may stand between the name and its "(".
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// groupers take a parenthesized list of label names.
var groupers = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// ParseExpr returns the selectors and grouping labels of a PromQL
// expression as Grafana stores it (with $variables). It is a tokenizer,
// not a parser: it finds every metric name (an identifier not followed by
// "(" and not a keyword, or a {__name__="..."} matcher), the label names
// of its matchers and of the grouping clauses, skipping strings, numbers,
// durations, ranges and Grafana variables. It fails on what it cannot
// read (an unterminated string, a malformed matcher), so a query it
// misreads is an error, never a silent pass.
func ParseExpr(expr string) (Expr, error) {
	var out Expr
	s := scanner{src: expr}
	for {
		s.skipSpace()
		if s.done() {
			return out, nil
		}
		c := s.peek()
		switch {
		case c == '"' || c == '\'' || c == '`':
			if err := s.skipString(); err != nil {
				return out, err
			}
		case c == '[':
			if err := s.skipPast(']'); err != nil {
				return out, err
			}
		case c == '$':
			if err := s.skipVariable(); err != nil {
				return out, err
			}
		case c == '{':
			labels, name, err := s.matchers()
			if err != nil {
				return out, err
			}
			if name == "" {
				return out, fmt.Errorf("grafana: %q: a selector without a metric name", expr)
			}
			out.Selectors = append(out.Selectors, Selector{Metric: name, Labels: labels})
		case isDigit(c) || c == '.':
			s.skipNumber()
		case isIdentStart(c):
			id := s.ident()
			s.skipSpace()
			next := s.peek()
			switch {
			case groupers[id]:
				if next != '(' {
					continue // group_left without labels
				}
				labels, err := s.labelList()
				if err != nil {
					return out, err
				}
				out.Grouping = append(out.Grouping, labels...)
			case keywords[id], aggregations[id], next == '(':
				// an operator, or a function or aggregation
			case next == '{':
				labels, name, err := s.matchers()
				if err != nil {
					return out, err
				}
				if name != "" && name != id {
					return out, fmt.Errorf("grafana: %q: %s with __name__ %q", expr, id, name)
				}
				out.Selectors = append(out.Selectors, Selector{Metric: id, Labels: labels})
			default:
				out.Selectors = append(out.Selectors, Selector{Metric: id})
			}
		default:
			s.pos++ // operators, parentheses, commas
		}
	}
}

// ParseLabelValues reads a Grafana variable query label_values(SELECTOR,
// LABEL) (or label_values(LABEL)): the selector's expression with LABEL
// as a grouping label it must carry.
func ParseLabelValues(q string) (Expr, error) {
	inner, ok := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return Expr{}, fmt.Errorf("grafana: variable query %q: want label_values(SELECTOR, LABEL)", q)
	}
	inner = inner[:len(inner)-1]
	i := strings.LastIndexByte(inner, ',')
	label := strings.TrimSpace(inner[i+1:])
	if !isLabelName(label) {
		return Expr{}, fmt.Errorf("grafana: variable query %q: %q is not a label name", q, label)
	}
	e := Expr{}
	if i >= 0 {
		var err error
		if e, err = ParseExpr(inner[:i]); err != nil {
			return Expr{}, err
		}
	}
	e.Grouping = append(e.Grouping, label)
	return e, nil
}

type scanner struct {
	src string
	pos int
}

// fail is an error naming the expression and what was wrong in it.
func (s *scanner) fail(format string, args ...any) error {
	return fmt.Errorf("grafana: %q: %s", s.src, fmt.Sprintf(format, args...))
}

func (s *scanner) done() bool { return s.pos >= len(s.src) }

func (s *scanner) peek() byte {
	if s.done() {
		return 0
	}
	return s.src[s.pos]
}

func (s *scanner) skipSpace() {
	for !s.done() && strings.IndexByte(" \t\r\n", s.src[s.pos]) >= 0 {
		s.pos++
	}
}

func (s *scanner) skipString() error {
	q := s.src[s.pos]
	for i := s.pos + 1; i < len(s.src); i++ {
		switch {
		case s.src[i] == '\\' && q != '`':
			i++
		case s.src[i] == q:
			s.pos = i + 1
			return nil
		}
	}
	return fmt.Errorf("grafana: %q: unterminated string", s.src)
}

// str reads a string literal and returns its text (escapes kept as they
// are: label values are not checked).
func (s *scanner) str() (string, error) {
	start := s.pos
	if c := s.peek(); c != '"' && c != '\'' && c != '`' {
		return "", s.fail("want a string at %q", s.src[s.pos:])
	}
	if err := s.skipString(); err != nil {
		return "", err
	}
	return s.src[start+1 : s.pos-1], nil
}

func (s *scanner) skipPast(end byte) error {
	i := strings.IndexByte(s.src[s.pos:], end)
	if i < 0 {
		return fmt.Errorf("grafana: %q: unterminated %c", s.src, s.src[s.pos])
	}
	s.pos += i + 1
	return nil
}

// skipVariable skips $name, ${name} or ${name:format}.
func (s *scanner) skipVariable() error {
	s.pos++
	if s.peek() == '{' {
		return s.skipPast('}')
	}
	if !isIdentStart(s.peek()) {
		return fmt.Errorf("grafana: %q: a $ without a variable name", s.src)
	}
	s.ident()
	return nil
}

// skipNumber skips a number or a duration (1, 0.5, 1e3, 5m, 1h30m).
func (s *scanner) skipNumber() {
	for !s.done() && (isIdentChar(s.src[s.pos]) || s.src[s.pos] == '.') {
		s.pos++
	}
}

func (s *scanner) ident() string {
	start := s.pos
	for !s.done() && isIdentChar(s.src[s.pos]) {
		s.pos++
	}
	return s.src[start:s.pos]
}

// matchers reads {label op "value", ...} and returns the label names and
// the value of an exact __name__ matcher, if any.
func (s *scanner) matchers() (labels []string, name string, err error) {
	s.pos++ // {
	for {
		s.skipSpace()
		if s.peek() == '}' {
			s.pos++
			return labels, name, nil
		}
		if !isIdentStart(s.peek()) {
			return nil, "", s.fail("want a label name at %q", s.src[s.pos:])
		}
		label := s.ident()
		s.skipSpace()
		op := ""
		for _, o := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(s.src[s.pos:], o) {
				op = o
				break
			}
		}
		if op == "" {
			return nil, "", s.fail("want a matcher operator after %s", label)
		}
		s.pos += len(op)
		s.skipSpace()
		v, err := s.str()
		if err != nil {
			return nil, "", err
		}
		if label == "__name__" {
			if op != "=" {
				return nil, "", s.fail("__name__%s%q: only an exact metric name can be checked", op, v)
			}
			name = v
		} else if !slices.Contains(labels, label) {
			labels = append(labels, label)
		}
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
		default:
			return nil, "", s.fail("want , or } at %q", s.src[s.pos:])
		}
	}
}

// labelList reads (label, label, ...).
func (s *scanner) labelList() ([]string, error) {
	s.pos++ // (
	var out []string
	for {
		s.skipSpace()
		if s.peek() == ')' {
			s.pos++
			return out, nil
		}
		if !isIdentStart(s.peek()) {
			return nil, s.fail("want a label name at %q", s.src[s.pos:])
		}
		out = append(out, s.ident())
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.pos++
		case ')':
		default:
			return nil, s.fail("want , or ) at %q", s.src[s.pos:])
		}
	}
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
func isIdentChar(c byte) bool  { return isIdentStart(c) || isDigit(c) }

func isLabelName(s string) bool {
	if s == "" || !isIdentStart(s[0]) || strings.Contains(s, ":") {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isIdentChar(s[i]) {
			return false
		}
	}
	return true
}
