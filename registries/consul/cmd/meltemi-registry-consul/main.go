// Command meltemi-registry-consul is Meltemi's registry plugin for services in Consul. The
// Meltemi host starts it; it is not meant to be run by hand.
package main

import (
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/consul"
)

func main() { sdk.Serve(consul.New()) }
