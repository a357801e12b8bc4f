package adminv1

import (
	"strings"

	"github.com/sigil-mesh/sigil/traffic"
)

// kinds maps the names `sigil get` and `sigil delete` accept to kinds.
var kinds = map[string]string{
	"virtualservice": traffic.KindVirtualService, "virtualservices": traffic.KindVirtualService, "vs": traffic.KindVirtualService,
	"destinationrule": traffic.KindDestinationRule, "destinationrules": traffic.KindDestinationRule, "dr": traffic.KindDestinationRule,
	"policy": traffic.KindPolicy, "policies": traffic.KindPolicy,
	"httproute": traffic.KindHTTPRoute, "httproutes": traffic.KindHTTPRoute,
	"grpcroute": traffic.KindGRPCRoute, "grpcroutes": traffic.KindGRPCRoute,
}

// KindOf resolves a kind name as kubectl users type it: singular, plural
// or short name in any case ("vs", "VirtualServices"), or the kind itself.
func KindOf(name string) (string, bool) {
	if k, ok := kinds[strings.ToLower(name)]; ok {
		return k, true
	}
	for _, k := range kinds {
		if strings.EqualFold(k, name) {
			return k, true
		}
	}
	return "", false
}
