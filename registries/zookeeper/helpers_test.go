package zookeeper

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/registries/dubbo/dubbotest"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// zkAddr returns the ZooKeeper to test against (MELTEMI_ZK_ADDR, as e2e/infra/up.sh writes it).
func zkAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("MELTEMI_ZK_ADDR")
	if addr == "" {
		if os.Getenv("MELTEMI_E2E") == "1" {
			t.Fatal("MELTEMI_E2E=1 but MELTEMI_ZK_ADDR is not set; run e2e/infra/up.sh zookeeper and source its env file")
		}
		t.Skip("MELTEMI_ZK_ADDR not set; run e2e/infra/up.sh zookeeper and source its env file")
	}
	return addr
}

// checkValid fails unless every service passes catalog.Validate unchanged.
func checkValid(t testing.TB, svcs ...catalog.Service) {
	t.Helper()
	for _, s := range svcs {
		valid, rej, ok := catalog.Validate(s)
		if !ok || len(rej) > 0 || !valid.Equal(s) {
			t.Fatalf("service %s does not validate unchanged: ok=%v rejections=%v", s.Key, ok, rej)
		}
	}
}

// ---------------------------------------------------------------------------------------
// A client that writes the registry the way Dubbo does

type dubboWriter struct {
	t      testing.TB
	conn   *zk.Conn
	chroot string
}

// newWriter connects a writer whose paths are below chroot (created if missing).
func newWriter(t testing.TB, addr, chroot string) *dubboWriter {
	t.Helper()
	conn, _, err := zk.Connect(strings.Split(addr, ","), 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(quietLogger{}))
	if err != nil {
		t.Fatal(err)
	}
	w := &dubboWriter{t: t, conn: conn, chroot: chroot}
	if chroot != "" {
		w.ensure(chroot)
	}
	t.Cleanup(func() {
		if chroot != "" {
			w.deleteTree(chroot)
		}
		conn.Close()
	})
	return w
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

func (w *dubboWriter) abs(p string) string { return w.chroot + p }

// ensure creates p and its parents as persistent nodes, as Dubbo does for categories.
func (w *dubboWriter) ensure(p string) {
	w.t.Helper()
	cur := ""
	for seg := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
		cur += "/" + seg
		if _, err := w.conn.Create(cur, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			w.t.Fatalf("create %s: %v", cur, err)
		}
	}
}

func providersPath(root, iface string) string {
	return "/" + root + "/" + dubbotest.EncodeURL(iface) + "/providers"
}

// register adds a provider the way Dubbo does: persistent category parents, an ephemeral
// node named by the URL-encoded URL. It returns the node's path below the chroot.
func (w *dubboWriter) register(root, iface, rawURL string) string {
	w.t.Helper()
	return w.createEphemeral(providersPath(root, iface), dubbotest.EncodeURL(rawURL), nil)
}

func (w *dubboWriter) createEphemeral(parent, name string, data []byte) string {
	w.t.Helper()
	w.ensure(w.abs(parent))
	p := parent + "/" + name
	if _, err := w.conn.Create(w.abs(p), data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		w.t.Fatalf("create %s: %v", catalog.Clip(p, 120), err)
	}
	return p
}

func (w *dubboWriter) delete(p string) {
	w.t.Helper()
	if err := w.conn.Delete(w.abs(p), -1); err != nil {
		w.t.Fatalf("delete %s: %v", catalog.Clip(p, 120), err)
	}
}

func (w *dubboWriter) set(p string, data []byte) {
	w.t.Helper()
	if _, err := w.conn.Set(w.abs(p), data, -1); err != nil {
		w.t.Fatalf("set %s: %v", p, err)
	}
}

// registerApp adds a Dubbo 3 application instance node and returns its path.
func (w *dubboWriter) registerApp(app, ip string, port int, data string) string {
	w.t.Helper()
	return w.createEphemeral("/services/"+app, net.JoinHostPort(ip, strconv.Itoa(port)), []byte(data))
}

// deleteTree removes an absolute path and everything below it.
func (w *dubboWriter) deleteTree(p string) {
	children, _, err := w.conn.Children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return
	}
	for _, c := range children {
		w.deleteTree(p + "/" + c)
	}
	if err := w.conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		w.t.Logf("cleanup: delete %s: %v", p, err)
	}
}

// providerURL is a provider URL as Dubbo 3.2 writes it.
func providerURL(proto, ip string, port int, iface string, extra string) string {
	u := fmt.Sprintf("%s://%s/%s?anyhost=true&application=demo-provider&deprecated=false&dubbo=2.0.2&dynamic=true&generic=false&interface=%s&methods=sayHello,sayHelloAsync&pid=%d&release=3.2.0&side=provider&timestamp=%d",
		proto, net.JoinHostPort(ip, strconv.Itoa(port)), iface, iface, rand.IntN(60000), time.Now().UnixMilli())
	if extra != "" {
		u += "&" + extra
	}
	return u
}

// testChroot returns a chroot unique to this test, so tests never see each other's nodes.
func testChroot(t testing.TB) string {
	return fmt.Sprintf("/meltemi-test-%s-%08x", strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), rand.Uint32())
}

// ---------------------------------------------------------------------------------------
// ZooKeeper four-letter words

// zkWatchCount returns the server's total watch count and its number of live connections.
func zkWatchCount(t testing.TB, addr string) (watches, conns int, ok bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.Split(addr, ",")[0], 2*time.Second)
	if err != nil {
		return 0, 0, false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("mntr")); err != nil {
		return 0, 0, false
	}
	found := 0
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "\t")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		switch {
		case err != nil:
		case k == "zk_watch_count":
			watches = n
			found++
		case k == "zk_num_alive_connections":
			conns = n
			found++
		}
	}
	return watches, conns, found == 2
}
