// Command etcd is etcd's own entry point, built at the version Kubernetes pins
// (go.etcd.io/etcd/server/v3 is a library; etcd's main lives in its root module).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
