package k8sattest

import (
	"errors"
	"strings"
	"testing"
)

const (
	nestedUID  = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
	nestedUIDu = "0b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0"
	testUID    = "2c48913c-b29f-11e7-9350-020968147796"
	testUIDu   = "2c48913c_b29f_11e7_9350_020968147796"
	testCID    = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961"
	otherCID   = "45490e76e0878aaa4d9808f7d2eefba37f093c3efbba9838b6d8ab804d9bd814"
)

func TestCgroupFormsKubeletWrites(t *testing.T) {
	want := Container{PodUID: testUID, ContainerID: testCID}
	for _, tc := range []struct {
		name, file string
		want       Container
		err        error
	}{
		{"v2 systemd containerd burstable", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope\n", want, nil},
		{"v2 systemd crio besteffort", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + testUIDu + ".slice/crio-" + testCID + ".scope\n", want, nil},
		{"v2 systemd docker guaranteed", "0::/kubepods.slice/kubepods-pod" + testUIDu + ".slice/docker-" + testCID + ".scope\n", want, nil},
		{"v2 cgroup namespace", "0::/../../kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope\n", want, nil},
		{"v2 systemd colon form", "0::/kubepods-besteffort-pod" + testUIDu + ".slice:cri-containerd:" + testCID + "\n", want, nil},
		{"v1 cgroupfs burstable", "12:memory:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n11:cpu,cpuacct:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n1:name=systemd:/kubepods/burstable/pod" + testUID + "/" + testCID + "\n", want, nil},
		{"v1 cgroupfs besteffort", "4:pids:/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n", want, nil},
		{"v1 cgroupfs guaranteed", "4:pids:/kubepods/pod" + testUID + "/" + testCID + "\n", want, nil},
		{"v1 cgroupfs crio", "4:pids:/kubepods/burstable/pod" + testUID + "/crio-" + testCID + "\n", want, nil},
		{"v1 kind in docker", "3:cpu:/docker/" + otherCID + "/kubepods/besteffort/pod" + testUID + "/" + testCID + "\n", want, nil},
		{"v1 systemd with a line naming no pod", "1:name=systemd:/system.slice/containerd.service\n5:memory:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope\n", want, nil},

		{"host process v2", "0::/system.slice/sshd.service\n", Container{}, ErrNotInPod},
		{"host process v1", "12:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-1.scope\n", Container{}, ErrNotInPod},
		{"empty", "", Container{}, ErrNotInPod},
		{"pod cgroup, no container", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice\n", Container{}, ErrNotInPod},
		{"bare scope without runtime prefix", "0::/kubepods-burstable-pod" + testUIDu + ".slice/" + testCID + ".scope\n", Container{}, ErrNotInPod},
		{"upper-case uid", "0::/kubepods/pod" + strings.ToUpper(testUID) + "/" + testCID + "\n", Container{}, ErrNotInPod},
		{"mixed separators", "0::/kubepods/pod2c48913c-b29f_11e7-9350-020968147796/" + testCID + "\n", Container{}, ErrNotInPod},
		{"short container id", "0::/kubepods/pod" + testUID + "/" + testCID[:63] + "\n", Container{}, ErrNotInPod},
		{"word ending in pod", "0::/kubepods/xpod" + testUID + "/" + testCID + "\n", Container{}, ErrNotInPod},
		{"container without pod", "0::/../crio-" + testCID + ".scope\n", Container{}, ErrNotInPod},
		// A container that may write its own cgroup tree nests a forged
		// pod below its real one: a pod is never below a pod.
		{"pod nested in a pod, systemd", "0::/kubepods.slice/kubepods-pod" + nestedUIDu + ".slice/cri-containerd-" + otherCID + ".scope/kubepods-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope\n", Container{}, ErrNotInPod},
		{"pod nested in a pod, cgroupfs", "4:pids:/kubepods/pod" + nestedUID + "/" + otherCID + "/pod" + testUID + "/" + testCID + "\n", Container{}, ErrNotInPod},

		{"two containers", "1:cpu:/kubepods/pod" + testUID + "/" + testCID + "\n2:memory:/kubepods/pod" + testUID + "/" + otherCID + "\n", Container{}, errTwo},
		{"two pods", "1:cpu:/kubepods/pod" + testUID + "/" + testCID + "\n2:memory:/kubepods/pod" + strings.Replace(testUID, "2c", "3d", 1) + "/" + testCID + "\n", Container{}, errTwo},
		{"malformed line", "garbage\n", Container{}, errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseCgroups(strings.NewReader(tc.file))
			switch {
			case tc.err == errTwo || tc.err == errMalformed:
				if err == nil || errors.Is(err, ErrNotInPod) {
					t.Fatalf("got %+v, %v; want a refusal", got, err)
				}
			case tc.err != nil:
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %+v, %v; want %v", got, err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Markers for the table: an error other than ErrNotInPod is wanted.
var (
	errTwo       = errors.New("two containers")
	errMalformed = errors.New("malformed")
)

func TestCgroupFileTooLong(t *testing.T) {
	long := strings.Repeat("1:cpu:/user.slice\n", maxCgroupFile/10)
	if _, err := ParseCgroups(strings.NewReader(long)); err == nil || errors.Is(err, ErrNotInPod) {
		t.Fatalf("a %d-byte file: %v", len(long), err)
	}
}
