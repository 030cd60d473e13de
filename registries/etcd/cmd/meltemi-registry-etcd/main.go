// Command meltemi-registry-etcd is Meltemi's registry plugin for Dubbo services in etcd.
// The Meltemi host starts it; it is not meant to be run by hand.
package main

import (
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/etcd"
)

func main() { sdk.Serve(etcd.New()) }
