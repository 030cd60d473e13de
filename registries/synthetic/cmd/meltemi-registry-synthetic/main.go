// Command meltemi-registry-synthetic is a registry plugin that invents its services: for
// benchmarks and failure tests of the plugin system. The Meltemi host starts it.
package main

import (
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/synthetic"
)

func main() { sdk.Serve(synthetic.New()) }
