// Command meltemi-registry-zookeeper is Meltemi's registry plugin for Dubbo services in
// ZooKeeper. The Meltemi host starts it; it is not meant to be run by hand.
package main

import (
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/zookeeper"
)

func main() { sdk.Serve(zookeeper.New()) }
