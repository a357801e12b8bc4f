package proxy

import (
	"fmt"
	"net"
	"os"
	"testing"
)

func TestPeerUIDOfLoopbackConnection(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skip(err)
			}
			defer ln.Close()
			c, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			uid, err := peerUID(s)
			if err != nil {
				t.Fatal(err)
			}
			if int(uid) != os.Getuid() {
				t.Errorf("peer uid %d, want %d", uid, os.Getuid())
			}
		})
	}
}

func TestGroupsOfProcessStatus(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   string
		err    bool
	}{
		{"Name:\tx\nGid:\t100\t101\t100\t100\nGroups:\t4 24 27 \n", "[101 4 24 27]", false},
		{"Gid:\t0\t0\t0\t0\nGroups:\t\n", "[0]", false},
		{"Name:\tx\n", "", true},
		{"Gid:\t1\tx\t1\t1\n", "", true},
	} {
		got, err := groupsOf(tc.status)
		if (err != nil) != tc.err || (err == nil && fmt.Sprint(got) != tc.want) {
			t.Errorf("groupsOf(%q) = %v, %v; want %s (error %v)", tc.status, got, err, tc.want, tc.err)
		}
	}
}
