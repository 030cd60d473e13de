package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

func TestReadEnvFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "env")
	content := "# comment\nexport MELTEMI_E2E_COMPONENTS=\"etcd zookeeper\"\nexport MELTEMI_ZK_ADDR=127.0.0.1:12181\nnot a line\n"
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := readEnvFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got["MELTEMI_E2E_COMPONENTS"] != "etcd zookeeper" || got["MELTEMI_ZK_ADDR"] != "127.0.0.1:12181" || len(got) != 2 {
		t.Fatalf("unexpected parse: %v", got)
	}
}

func TestEventually(t *testing.T) {
	calls := 0
	(&Env{}).Eventually(t, 5*time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("calls = %d, want 3", calls)
	}
}

// TestServers checks the harness against whatever e2e/infra/up.sh started.
func TestServers(t *testing.T) {
	env := Load(t)
	if env.Has(KubeAPIServer) {
		t.Run("kube-apiserver", func(t *testing.T) {
			cfg := env.RestConfig(t)
			hc, err := rest.HTTPClientFor(cfg)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Get(cfg.Host + "/apis/networking.istio.io/v1/serviceentries")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"ServiceEntryList"`) {
				t.Fatalf("listing ServiceEntries: %s: %s", resp.Status, body)
			}
		})
	}
	if env.Has(ZooKeeper) {
		t.Run("zookeeper-restart", func(t *testing.T) {
			env.RequireComponent(t, ZooKeeper)
			env.Restart(t, ZooKeeper)
			env.Eventually(t, 10*time.Second, func() error { return zkStandalone(env.ZKAddr) })
			env.Kill(t, ZooKeeper)
			if zkStandalone(env.ZKAddr) == nil {
				t.Fatal("zookeeper still answers after kill")
			}
			env.Start(t, ZooKeeper)
			if err := zkStandalone(env.ZKAddr); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func zkStandalone(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("srvr")); err != nil {
		return err
	}
	out, _ := io.ReadAll(c)
	if !strings.Contains(string(out), "Mode: standalone") {
		return fmt.Errorf("srvr answered %q", out)
	}
	return nil
}
