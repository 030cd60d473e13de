package nacos

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
)

// nacosAddr returns the Nacos-protocol server of the e2e environment.
func nacosAddr(t testing.TB) string {
	t.Helper()
	env := harness.Load(t)
	env.RequireComponent(t, harness.Polaris)
	return env.NacosAddr
}

// uniqueName returns a name of the test's own, so tests never see each other's services.
func uniqueName(prefix string) string { return fmt.Sprintf("%s-%08x", prefix, rand.Uint32()) }

// startPlugin configures a new plugin and runs its Watch until the test ends.
func startPlugin(t testing.TB, address string, options map[string]string) (*Plugin, *sdktest.Recorder) {
	t.Helper()
	p := New().(*Plugin)
	return p, sdktest.Run(t, p, sdkConfig(address, options))
}

func sdkConfig(addr string, options map[string]string) sdk.Config {
	return sdk.Config{Registry: "nacos-test", Address: addr, Options: options}
}
