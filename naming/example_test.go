package naming_test

import (
	"errors"
	"fmt"

	"github.com/sigil-mesh/sigil/naming"
)

func ExampleResolver_Authority() {
	// A caller in namespace prod of the cluster domain cluster.local.
	r, err := naming.NewResolver("prod", naming.DefaultClusterDomain)
	if err != nil {
		panic(err)
	}
	for _, host := range []string{"api:8080", "api.team-a.svc.cluster.local.", "api.github.com", "api.."} {
		svc, err := r.Authority(host)
		switch {
		case errors.Is(err, naming.ErrNotInMesh):
			fmt.Println(host, "→ not in the mesh (502)")
		case errors.Is(err, naming.ErrMalformed):
			fmt.Println(host, "→ malformed (400)")
		default:
			fmt.Println(host, "→", svc)
		}
	}
	// Output:
	// api:8080 → api.prod
	// api.team-a.svc.cluster.local. → api.team-a
	// api.github.com → not in the mesh (502)
	// api.. → malformed (400)
}
