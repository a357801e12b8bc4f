package main

import (
	"context"
	"fmt"
	"io"
	"time"

	adminv1 "github.com/sigil-mesh/sigil/api/admin/v1"
	"github.com/sigil-mesh/sigil/gatewayapi"
	"github.com/sigil-mesh/sigil/internal/markdown"
	"github.com/sigil-mesh/sigil/traffic"
	"github.com/sigil-mesh/sigil/traffic/review"
)

// reviewWindow is how far back `sigil apply --dry-run --review` reads the
// server's stats for the traffic a change would touch.
const reviewWindow = 5 * time.Minute

// writeReview writes `sigil apply --dry-run --review`'s markdown: every
// change the files make to what goes on the wire, against what is in
// force on the server, with the share of the last reviewWindow's traffic
// it would touch, then the resources as the dry run judged them.
func writeReview(ctx context.Context, w io.Writer, c *adminv1.AdminClient, files []adminv1.File, resp adminv1.ApplyResponse) error {
	var inForce []traffic.Resource
	for _, kind := range []string{traffic.KindVirtualService, traffic.KindDestinationRule, traffic.KindHTTPRoute, traffic.KindGRPCRoute} {
		stored, err := c.ListConfig(ctx, kind)
		if err != nil {
			return fmt.Errorf("review: listing the %ss in force: %w", kind, err)
		}
		for _, s := range stored {
			r, err := gatewayapi.FromSpec(s.Kind, s.Namespace, s.Name, s.Spec)
			if err != nil {
				return fmt.Errorf("review: reading %s %s/%s in force: %w", s.Kind, s.Namespace, s.Name, err)
			}
			inForce = append(inForce, r)
		}
	}
	proposed := append([]traffic.Resource(nil), inForce...)
	at := map[string]int{}
	for i, r := range proposed {
		at[r.Key()] = i
	}
	for _, f := range files {
		rs, err := gatewayapi.Parse([]byte(f.Content), f.Name)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if i, ok := at[r.Key()]; ok {
				proposed[i] = r
			} else {
				at[r.Key()] = len(proposed)
				proposed = append(proposed, r)
			}
		}
	}
	// Routes change traffic through the VirtualServices they make.
	inForce, proposed = gatewayapi.WithVirtualServices(inForce), gatewayapi.WithVirtualServices(proposed)
	if err := review.Markdown(w, review.Diff(inForce, proposed), figures(ctx, c)); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nResources (dry run):\n\n")
	for _, r := range resp.Results {
		fmt.Fprintf(w, "- %s %s\n", markdown.Text(resourceName(r.Kind, r.Namespace, r.Name)), r.Action)
	}
	return nil
}

// figures reads the server's route and subset rows of the last
// reviewWindow; when it cannot, the review says there are no live
// traffic data, and why.
func figures(ctx context.Context, c *adminv1.AdminClient) *review.Figures {
	routes, err := c.Stats(ctx, adminv1.StatQuery{Kind: adminv1.StatRoute, Window: reviewWindow})
	if err != nil {
		return review.NoFigures("the server's stats: " + err.Error())
	}
	subsets, err := c.Stats(ctx, adminv1.StatQuery{Kind: adminv1.StatSubset, Window: reviewWindow})
	if err != nil {
		return review.NoFigures("the server's stats: " + err.Error())
	}
	return review.NewFigures(routes, subsets)
}
