// Package unixattest attests workloads on a Unix socket: it reads the
// caller's pid, uid and gid from the socket (SO_PEERCRED, set by the
// kernel, so a caller cannot lie about them) and turns them into SPIRE's
// unix selectors: unix:uid, unix:gid, unix:user, unix:group, unix:path and
// unix:sha256.
package unixattest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"

	"github.com/sigil-mesh/sigil/selector"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthInfo is the peer's credentials, as the kernel reports them.
type AuthInfo struct {
	credentials.CommonAuthInfo
	PID int32
	UID uint32
	GID uint32
	// StartTime is the process's start time (clock ticks after boot,
	// /proc/<pid>/stat field 22) read at the handshake; 0 when it could
	// not be read, which SameProcess refuses.
	StartTime uint64
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return "peercred" }

// Credentials are gRPC transport credentials for a Unix socket server that
// record the peer's credentials; they add no encryption (the socket is
// local) and refuse any connection that is not a Unix socket.
type Credentials struct{}

var _ credentials.TransportCredentials = Credentials{}

// ServerHandshake reads SO_PEERCRED from the accepted connection.
func (Credentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("unixattest: %T is not a Unix socket", conn)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("unixattest: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("unixattest: %w", err)
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("unixattest: SO_PEERCRED: %w", credErr)
	}
	// An unreadable start time stays 0: every attestation of the
	// connection is then refused (SameProcess), not trusted blind.
	start, _ := startTime("/proc", cred.Pid)
	return conn, AuthInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, PID: cred.Pid, UID: cred.Uid, GID: cred.Gid, StartTime: start}, nil
}

// ClientHandshake is not supported: these credentials are for servers.
func (Credentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("unixattest: client side not supported")
}

// Info implements credentials.TransportCredentials.
func (Credentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

// Clone implements credentials.TransportCredentials.
func (Credentials) Clone() credentials.TransportCredentials { return Credentials{} }

// OverrideServerName implements credentials.TransportCredentials.
func (Credentials) OverrideServerName(string) error { return nil }

// ErrNoPeer means the call did not come over Credentials.
var ErrNoPeer = errors.New("unixattest: no peer credentials on this call")

// FromContext returns the credentials of the caller of a gRPC call.
func FromContext(ctx context.Context) (AuthInfo, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return AuthInfo{}, ErrNoPeer
	}
	info, ok := p.AuthInfo.(AuthInfo)
	if !ok {
		return AuthInfo{}, ErrNoPeer
	}
	return info, nil
}

// Attestor turns peer credentials into selectors. Binary hashes are cached
// by file identity (device, inode, size, mtime), so a binary is read once.
type Attestor struct {
	// ProcRoot is /proc unless a test says otherwise.
	ProcRoot string

	mu     sync.Mutex
	hashes map[fileKey]string
}

type fileKey struct {
	dev, ino   uint64
	size, mtim int64
}

// Attest returns the selectors of the process info describes. uid and gid
// always come from the kernel; path and sha256 come from /proc and are left
// out when the process is gone or unreadable, so entries that need them
// simply do not match (fail closed).
func (a *Attestor) Attest(_ context.Context, info AuthInfo) []selector.Selector {
	uid, gid := strconv.FormatUint(uint64(info.UID), 10), strconv.FormatUint(uint64(info.GID), 10)
	out := []selector.Selector{selector.Unix(selector.UnixUID, uid), selector.Unix(selector.UnixGID, gid)}
	if u, err := user.LookupId(uid); err == nil {
		out = append(out, selector.Unix(selector.UnixUser, u.Username))
	}
	if g, err := user.LookupGroupId(gid); err == nil {
		out = append(out, selector.Unix(selector.UnixGroup, g.Name))
	}
	root := a.ProcRoot
	if root == "" {
		root = "/proc"
	}
	exe := root + "/" + strconv.Itoa(int(info.PID)) + "/exe"
	if path, err := os.Readlink(exe); err == nil {
		out = append(out, selector.Unix(selector.UnixPath, path))
		// Hash through /proc/<pid>/exe, the very file the process runs, even
		// if the path now names another file.
		if sum, err := a.hash(exe); err == nil {
			out = append(out, selector.Unix(selector.UnixSHA256, sum))
		}
	}
	return selector.Sort(out)
}

func (a *Attestor) hash(exe string) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("unixattest: no stat")
	}
	key := fileKey{dev: sys.Dev, ino: sys.Ino, size: st.Size(), mtim: st.ModTime().UnixNano()}
	a.mu.Lock()
	sum, ok := a.hashes[key]
	a.mu.Unlock()
	if ok {
		return sum, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	a.mu.Lock()
	if a.hashes == nil || len(a.hashes) > 4096 {
		a.hashes = make(map[fileKey]string)
	}
	a.hashes[key] = sum
	a.mu.Unlock()
	return sum, nil
}
