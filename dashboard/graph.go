package dashboard

import (
	"fmt"
	"net/http"
	"sort"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
)

// Graph is GET /api/graph: the service graph of the window's observed
// edges, laid out in columns (callers left of what they call) so the page
// only draws it.
type Graph struct {
	Header
	Nodes []GraphNode `json:"nodes"`
	Edges []GraphEdge `json:"edges"`
}

// GraphNode is a service, or a calling identity no registered service
// holds (a client outside any service).
type GraphNode struct {
	// ID is "svc:NS/NAME" or "id:SPIFFE-ID".
	ID    string `json:"id"`
	Label string `json:"label"`
	// Column and Row place the node: Column is its depth from the nodes
	// nobody calls, Row its place in the column.
	Column int `json:"column"`
	Row    int `json:"row"`
}

// GraphEdge is one observed edge between two nodes, with the identities
// each side proved.
type GraphEdge struct {
	From string `json:"from"`
	To   string `json:"to"`
	adminv1.Edge
}

func serviceNode(ns, name string) string { return "svc:" + ns + "/" + name }

func (a *api) graph(r *http.Request) (any, error) {
	win, ns, err := scope(r)
	if err != nil {
		return nil, err
	}
	edges, err := a.cfg.Stats.Edges(r.Context(), adminv1.StatQuery{Namespace: ns, Window: win})
	if err != nil {
		return nil, fmt.Errorf("dashboard: edges: %w", err)
	}
	svcs, err := a.cfg.Inventory.Services(r.Context())
	if err != nil {
		return nil, fmt.Errorf("dashboard: services: %w", err)
	}
	// An identity is drawn as the service its sidecars registered, when
	// exactly one service has it.
	owner := map[string]string{}
	shared := map[string]bool{}
	for _, s := range svcs {
		for _, id := range s.Identities {
			if o, ok := owner[id]; ok && o != serviceNode(s.Namespace, s.Name) {
				shared[id] = true
			}
			owner[id] = serviceNode(s.Namespace, s.Name)
		}
	}
	labels := map[string]string{}
	g := Graph{Header: a.header(win), Nodes: []GraphNode{}, Edges: []GraphEdge{}}
	for _, e := range edges.Edges {
		from, ok := owner[e.Source]
		if !ok || shared[e.Source] {
			from = "id:" + e.Source
			labels[from] = e.Source
		} else {
			labels[from] = from[len("svc:"):]
		}
		to := serviceNode(e.DestinationNamespace, e.DestinationService)
		labels[to] = e.DestinationNamespace + "/" + e.DestinationService
		g.Edges = append(g.Edges, GraphEdge{From: from, To: to, Edge: e})
	}
	g.Nodes = layout(labels, g.Edges)
	return g, nil
}

// layout gives each node the length of the longest path reaching it
// (cycles cut after as many rounds as there are nodes) as its column, and
// rows in name order within a column.
func layout(labels map[string]string, edges []GraphEdge) []GraphNode {
	col := make(map[string]int, len(labels))
	for range labels {
		changed := false
		for _, e := range edges {
			if e.From != e.To && col[e.To] < col[e.From]+1 && col[e.From]+1 < len(labels) {
				col[e.To] = col[e.From] + 1
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	nodes := make([]GraphNode, 0, len(labels))
	for id, label := range labels {
		nodes = append(nodes, GraphNode{ID: id, Label: label, Column: col[id]})
	}
	sort.Slice(nodes, func(i, j int) bool {
		if nodes[i].Column != nodes[j].Column {
			return nodes[i].Column < nodes[j].Column
		}
		return nodes[i].Label < nodes[j].Label
	})
	for i := range nodes {
		if i > 0 && nodes[i].Column == nodes[i-1].Column {
			nodes[i].Row = nodes[i-1].Row + 1
		}
	}
	return nodes
}
