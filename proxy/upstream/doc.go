// Package upstream is where the outbound side sends a request: the
// clusters of a service's endpoints under their DestinationRule (Cluster:
// the load balancer, consistent hashing, warmup, outlier detection and
// the connection pool with its retry budget), the endpoints themselves
// (Endpoint: the sidecars of a service, with their latency estimates,
// ejections and pooled connections, kept across configuration changes),
// and the cap on connections to each destination sidecar (Conns).
//
// It opens no connection of its own accord: an Endpoint's connections are
// dialled by the Dialer it is given (package proxy's outbound side, which
// holds the sidecar's identity and proves the peer's), so the rules of
// where a request goes are testable without certificates.
package upstream
