package nacos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/e2e/harness"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/plugins/sdk/sdktest"
	"github.com/meltemi-mesh/meltemi/registries/nacos/nacostest"
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

// registerServices registers services svc-00000, svc-00001, … with one instance each, eight
// at a time.
func registerServices(t testing.TB, app *nacostest.App, n int) {
	t.Helper()
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				app.Register(nacostest.Instance(fmt.Sprintf("svc-%05d", i), "", "10.2.0.1", 8080, nil))
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// awaitListed waits until the server lists n services in the default group of namespace ns:
// it lists a new service up to a second after its registration.
func awaitListed(t testing.TB, app *nacostest.App, ns string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		names, err := listGroup(context.Background(), app.INamingClient, ns, defaultGroup)
		if err == nil && len(names) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d services listed after a minute (last error: %v)", len(names), n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
