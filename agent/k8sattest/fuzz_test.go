package k8sattest

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseCgroups: any cgroup file gives a pod container in the API
// server's forms, ErrNotInPod, or another error; never a panic, never a
// UID or container ID the selectors could not carry.
func FuzzParseCgroups(f *testing.F) {
	for _, s := range []string{
		"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope\n",
		"12:memory:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n1:name=systemd:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n",
		"0::/kubepods-besteffort-pod" + testUIDu + ".slice:cri-containerd:" + testCID + "\n",
		"0::/../../kubepods-pod" + testUIDu + ".slice/crio-" + testCID + ".scope",
		"0::/system.slice/sshd.service\n",
		"::\n:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		c, err := ParseCgroups(strings.NewReader(file))
		if err != nil {
			if c != (Container{}) {
				t.Fatalf("error %v with a result %+v", err, c)
			}
			return
		}
		if len(c.PodUID) != 36 || strings.Count(c.PodUID, "-") != 4 || strings.ContainsAny(c.PodUID, ":_/") {
			t.Fatalf("pod uid %q", c.PodUID)
		}
		if !isContainerID(c.ContainerID) {
			t.Fatalf("container id %q", c.ContainerID)
		}
		if errors.Is(err, ErrNotInPod) {
			t.Fatal("unreachable")
		}
	})
}
