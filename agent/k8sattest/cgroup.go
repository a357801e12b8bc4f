package k8sattest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Container is where a process runs on Kubernetes, as its cgroup names it:
// the pod's UID in the API server's form (8-4-4-4-12 lower-case hex,
// dashes) and the container runtime's 64-hex container ID.
type Container struct {
	PodUID      string
	ContainerID string
}

// ErrNotInPod means the cgroups name no pod container: the process is a
// host process, or runs under a runtime or cgroup layout not read here.
var ErrNotInPod = errors.New("k8sattest: cgroup names no pod container")

// maxCgroupFile bounds what is read of /proc/<pid>/cgroup: one line per
// cgroup v1 hierarchy (a dozen or so), one in all with cgroup v2.
const maxCgroupFile = 64 << 10

// containerPrefixes are the prefixes container runtimes put before the
// container ID in the container's cgroup: under kubelet's systemd driver
// always (…/kubepods-burstable-pod<uid>.slice/<prefix><cid>.scope), under
// the cgroupfs driver for CRI-O (…/pod<uid>/crio-<cid>); containerd and
// Docker write the bare ID there (…/pod<uid>/<cid>).
var containerPrefixes = []string{"cri-containerd-", "crio-", "docker-"}

// ParseCgroups reads a /proc/<pid>/cgroup file (lines of
// "hierarchy-id:controllers:path", cgroup v1 or v2) and returns the pod
// container the process runs in. Lines that name no pod container (such
// as v1's "name=systemd" hierarchy on some hosts) are skipped; lines that
// name different pods or containers make it fail, since the process can
// then be placed in a cgroup of its choosing (SPIRE refuses the same).
// The paths read are kubelet's, under both cgroup drivers:
//
//	systemd:  /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<cid>.scope
//	          (also crio-<cid>.scope and docker-<cid>.scope, and the
//	          kubepods-pod<uid>.slice of guaranteed pods)
//	cgroupfs: /kubepods/burstable/pod<uid>/<cid>, /kubepods/besteffort/pod<uid>/<cid>, /kubepods/pod<uid>/<cid>
//
// Only the last two segments are read, since in a cgroup namespace (the
// default for containers on cgroup v2) the path starts at the reader's
// own cgroup, as /../../kubepods-…; a pod slice and container scope joined
// by colons (kubepods-…-pod<uid>.slice:cri-containerd:<cid>, containerd's
// systemd cgroupsPath form) is read too.
func ParseCgroups(r io.Reader) (Container, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxCgroupFile+1))
	if err != nil {
		return Container{}, fmt.Errorf("k8sattest: reading cgroups: %w", err)
	}
	if len(data) > maxCgroupFile {
		return Container{}, fmt.Errorf("k8sattest: cgroup file longer than %d bytes", maxCgroupFile)
	}
	var found Container
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxCgroupFile)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		// hierarchy-ID:controller-list:cgroup-path; the path may itself
		// hold colons, so only the first two separate fields.
		_, rest, ok1 := strings.Cut(line, ":")
		_, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return Container{}, fmt.Errorf("k8sattest: cgroup line %q: want hierarchy-id:controllers:path", line)
		}
		c, ok := parsePath(path)
		if !ok {
			continue
		}
		switch {
		case found == (Container{}):
			found = c
		case found != c:
			return Container{}, fmt.Errorf("k8sattest: cgroups name two containers (pod %s container %s, pod %s container %s)", found.PodUID, found.ContainerID, c.PodUID, c.ContainerID)
		}
	}
	if err := sc.Err(); err != nil {
		return Container{}, fmt.Errorf("k8sattest: reading cgroups: %w", err)
	}
	if found == (Container{}) {
		return Container{}, ErrNotInPod
	}
	return found, nil
}

// parsePath reads the pod and container from one cgroup path.
func parsePath(path string) (Container, bool) {
	var podSeg, ctrSeg string
	segs := strings.Split(path, "/")
	last := segs[len(segs)-1]
	if slice, ctr, ok := strings.Cut(last, ".slice:"); ok {
		// kubepods-…-pod<uid>.slice:<runtime>:<cid>
		runtime, cid, ok := strings.Cut(ctr, ":")
		if !ok || runtime == "" {
			return Container{}, false
		}
		podSeg, ctrSeg = slice, cid
	} else {
		if len(segs) < 2 {
			return Container{}, false
		}
		podSeg, ctrSeg = strings.TrimSuffix(segs[len(segs)-2], ".slice"), last
		scope, isScope := strings.CutSuffix(ctrSeg, ".scope")
		prefixed := false
		for _, p := range containerPrefixes {
			if cid, ok := strings.CutPrefix(scope, p); ok {
				scope, prefixed = cid, true
				break
			}
		}
		// A systemd scope always carries the runtime's prefix: a bare
		// <cid>.scope is no layout kubelet makes.
		if isScope && !prefixed {
			return Container{}, false
		}
		ctrSeg = scope
	}
	uid, ok := podUID(podSeg)
	if !ok || !isContainerID(ctrSeg) {
		return Container{}, false
	}
	// A pod's cgroup is never below another pod's: a path naming a pod
	// twice is one a container made inside its own cgroup (a privileged
	// or delegated one) to pass as the inner pod. Refuse it (fail closed).
	outer := segs[:len(segs)-1]
	if !strings.Contains(last, ".slice:") {
		outer = segs[:len(segs)-2]
	}
	for _, seg := range outer {
		if _, nested := podUID(strings.TrimSuffix(seg, ".slice")); nested {
			return Container{}, false
		}
	}
	return Container{PodUID: uid, ContainerID: ctrSeg}, true
}

// podUID reads "pod<uid>" at the end of a pod's cgroup name: the whole of
// it (cgroupfs: pod<uid>) or after a dash (systemd:
// kubepods-burstable-pod<uid>, with underscores for the UID's dashes).
func podUID(seg string) (string, bool) {
	const uidLen = 36
	if len(seg) < len("pod")+uidLen {
		return "", false
	}
	head, raw := seg[:len(seg)-uidLen], seg[len(seg)-uidLen:]
	rest, ok := strings.CutSuffix(head, "pod")
	if !ok || (rest != "" && !strings.HasSuffix(rest, "-")) {
		return "", false
	}
	sep := raw[8]
	if sep != '-' && sep != '_' {
		return "", false
	}
	out := []byte(raw)
	for i := range out {
		switch i {
		case 8, 13, 18, 23:
			if out[i] != sep {
				return "", false
			}
			out[i] = '-'
		default:
			if !isLowerHex(out[i]) {
				return "", false
			}
		}
	}
	return string(out), true
}

// isContainerID reports whether s is a container ID as containerd, CRI-O
// and Docker make them: 64 lower-case hex digits.
func isContainerID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(b byte) bool { return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' }
