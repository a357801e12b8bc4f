// Package grafana holds Sigil's Grafana dashboard (sigil-mesh.json: the
// mesh overview, built on the series of docs/metrics.md) and reads what
// its PromQL queries ask of Prometheus, so that tests can check every
// metric and label it uses against what the binaries expose. No binary
// links it.
//
//	q, err := grafana.Queries(grafana.MeshDashboard)
//	for _, q := range q { e, err := q.Parse(); ... e.Selectors ... }
package grafana

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

// MeshDashboard is sigil-mesh.json as shipped.
//
//go:embed sigil-mesh.json
var MeshDashboard []byte

// Query is one PromQL query of a dashboard: a panel target or a template
// variable's label_values query.
type Query struct {
	// Where names it: the panel's title and target refId, or the
	// variable's name.
	Where string
	Expr  string
	// Variable: Expr is a label_values(...) variable query.
	Variable bool
}

// Parse reads the query's selectors and grouping labels.
func (q Query) Parse() (Expr, error) {
	if q.Variable {
		return ParseLabelValues(q.Expr)
	}
	return ParseExpr(q.Expr)
}

type dashboard struct {
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

// Queries returns every PromQL query of a dashboard's JSON: each panel
// target (in rows too) and each query variable. A panel target without
// an expression is an error: the dashboard is for Prometheus only.
func Queries(dashboardJSON []byte) ([]Query, error) {
	var d dashboard
	if err := json.Unmarshal(dashboardJSON, &d); err != nil {
		return nil, fmt.Errorf("grafana: dashboard: %w", err)
	}
	var out []Query
	var walk func([]panel) error
	walk = func(ps []panel) error {
		for _, p := range ps {
			for _, t := range p.Targets {
				if t.Expr == "" {
					return fmt.Errorf("grafana: panel %q target %s has no PromQL expression", p.Title, t.RefID)
				}
				out = append(out, Query{Where: p.Title + " " + t.RefID, Expr: t.Expr})
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(d.Panels); err != nil {
		return nil, err
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// Grafana stores the query as a string or as {"query": "..."}.
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, fmt.Errorf("grafana: variable %s: query: %w", v.Name, err)
			}
			q = obj.Query
		}
		out = append(out, Query{Where: "variable " + v.Name, Expr: q, Variable: true})
	}
	return out, nil
}
