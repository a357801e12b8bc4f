// Command etcd is etcd's own server (go.etcd.io/etcd/server/v3/etcdmain),
// built here so the Kubernetes e2e suite runs an etcd of the version
// kube-apiserver v1.37 is tested with; Debian's etcd-server is 3.4.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
