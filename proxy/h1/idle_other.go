//go:build !unix

package h1

import "net"

// idlePeek has no way to look at a socket here: a stale connection is
// found by the request that fails on it (see retryable).
type idlePeek struct{}

func newIdlePeek(net.Conn) idlePeek { return idlePeek{} }

func (*idlePeek) check() idleState { return idleUnknown }
