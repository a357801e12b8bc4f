//go:build !linux

package capture

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
)

// OriginalDst always fails here: SO_ORIGINAL_DST, where iptables REDIRECT
// keeps a captured connection's destination, is Linux's. Transparent
// capture needs Linux; every other connection is served as one the app
// made to the sidecar explicitly.
func OriginalDst(syscall.Conn) (*net.TCPAddr, error) {
	return nil, fmt.Errorf("capture: original destination (SO_ORIGINAL_DST) on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
