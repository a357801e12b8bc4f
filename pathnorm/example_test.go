package pathnorm_test

import (
	"fmt"

	"github.com/sigil-mesh/sigil/pathnorm"
)

func ExampleOptions_Target() {
	var o pathnorm.Options // escaped slashes decoded, Istio's recommendation
	for _, target := range []string{"/%61dmin", "/public/..%2Fadmin?x=1", "//api/./v1/", "/admin%00"} {
		t, err := o.Target("GET", target)
		fmt.Println(t.URI(), err)
	}
	// Output:
	// /admin <nil>
	// /admin?x=1 <nil>
	// /api/v1/ <nil>
	//  pathnorm: invalid request target: encoded control character %00
}

func ExampleParseQuery() {
	fmt.Println(pathnorm.ParseQuery("role=viewer&role=admin&debug&q=a+b%21"))
	// Output: map[debug:[] q:[a b!] role:[viewer admin]]
}
