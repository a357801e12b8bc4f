//go:build !linux

package proxy

import (
	"errors"
	"net"
)

// peerUID is Linux-only (NETLINK_SOCK_DIAG); elsewhere the owner is
// unknown, and --app-uid refuses every connection.
func peerUID(net.Conn) (uint32, error) {
	return 0, errors.New("proxy: peer uid: only known on Linux")
}

// peerSocket is Linux-only, as peerUID.
func peerSocket(net.Conn) (uid, inode uint32, err error) {
	return 0, 0, errors.New("proxy: peer uid: only known on Linux")
}

// peerGroups is Linux-only, as peerUID.
func peerGroups(uint32) ([]uint32, error) {
	return nil, errors.New("proxy: peer gid: only known on Linux")
}
