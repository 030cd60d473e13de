// Command meltemi-registry-nacos is Meltemi's registry plugin for Nacos. The Meltemi host
// starts it; it is not meant to be run by hand.
package main

import (
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/nacos"
)

func main() { sdk.Serve(nacos.New()) }
