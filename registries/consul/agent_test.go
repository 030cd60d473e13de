package consul

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// devAgent is a Consul agent of a test's own, in -dev mode (in-memory state), for what the
// shared server must not be put through: other datacenters, ACLs, losing all state.
type devAgent struct {
	t     testing.TB
	bin   string
	dc    string
	hcl   string
	ports [4]int // http, server, serf LAN, serf WAN
	dir   string
	cmd   *exec.Cmd
	done  chan struct{}
	out   *bytes.Buffer
}

// consulBinary finds the agent binary that e2e/infra/tools.sh built.
func consulBinary(t testing.TB) string {
	t.Helper()
	sharedConsul(t) // the same servers-are-up rule as every integration test
	root, err := os.Getwd()
	for err == nil {
		if _, serr := os.Stat(filepath.Join(root, "go.mod")); serr == nil {
			break
		}
		if parent := filepath.Dir(root); parent != root {
			root = parent
		} else {
			err = fmt.Errorf("no go.mod above the working directory")
		}
	}
	var out []byte
	if err == nil {
		out, err = exec.Command(filepath.Join(root, "e2e", "infra", "tools.sh"), "path", "consul").Output()
	}
	bin := strings.TrimSpace(string(out))
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		if on, _ := strconv.ParseBool(os.Getenv("MELTEMI_E2E")); on {
			t.Fatalf("consul binary: %v (MELTEMI_E2E is set, so this is a failure)", err)
		}
		t.Skipf("consul binary not built (e2e/infra/tools.sh consul): %v", err)
	}
	return bin
}

// startDevAgent starts an agent for datacenter dc with extra HCL configuration.
func startDevAgent(t testing.TB, dc, hcl string) *devAgent {
	t.Helper()
	a := &devAgent{t: t, bin: consulBinary(t), dc: dc, hcl: hcl, dir: t.TempDir()}
	for i := range a.ports {
		a.ports[i] = freePort(t)
	}
	a.start()
	t.Cleanup(a.stop)
	return a
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (a *devAgent) addr() string { return "127.0.0.1:" + strconv.Itoa(a.ports[0]) }

func (a *devAgent) start() {
	a.t.Helper()
	args := []string{"agent", "-dev", "-datacenter", a.dc, "-node", "node-" + a.dc,
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(a.ports[0]), "-server-port", strconv.Itoa(a.ports[1]),
		"-serf-lan-port", strconv.Itoa(a.ports[2]), "-serf-wan-port", strconv.Itoa(a.ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-https-port", "-1",
		"-log-level", "warn", "-hcl", "disable_update_check = true"}
	if a.hcl != "" {
		args = append(args, "-hcl", a.hcl)
	}
	a.cmd = exec.Command(a.bin, args...)
	a.cmd.Dir = a.dir
	a.out = &bytes.Buffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("starting consul: %v", err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(a.cmd, a.done)

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-a.done:
			a.t.Fatalf("consul %s exited at start:\n%s", a.dc, a.out)
		default:
		}
		resp, err := http.Get("http://" + a.addr() + "/v1/status/leader")
		if err == nil {
			var body bytes.Buffer
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if l := strings.Trim(strings.TrimSpace(body.String()), `"`); resp.StatusCode == 200 && l != "" {
				return
			}
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("consul %s not ready within 30s:\n%s", a.dc, a.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the agent (SIGTERM, then SIGKILL); a -dev agent loses all its state.
func (a *devAgent) stop() {
	select {
	case <-a.done:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// joinWAN federates a with other, as two datacenters.
func (a *devAgent) joinWAN(other *devAgent) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/v1/agent/join/127.0.0.1:%d?wan=1", a.addr(), other.ports[3])
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("WAN join: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		a.t.Fatalf("WAN join: %s", resp.Status)
	}
}
