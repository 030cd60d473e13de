package zookeeper

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/dubbo"
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

// checkValid fails unless every service passes model.Validate unchanged.
func checkValid(t testing.TB, svcs ...sdk.Service) {
	t.Helper()
	for _, s := range svcs {
		valid, rej, ok := model.Validate(s)
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
	return "/" + root + "/" + dubbo.EncodeURL(iface) + "/providers"
}

// register adds a provider the way Dubbo does: persistent category parents, an ephemeral
// node named by the URL-encoded URL. It returns the node's path below the chroot.
func (w *dubboWriter) register(root, iface, rawURL string) string {
	w.t.Helper()
	return w.createEphemeral(providersPath(root, iface), dubbo.EncodeURL(rawURL), nil)
}

func (w *dubboWriter) createEphemeral(parent, name string, data []byte) string {
	w.t.Helper()
	w.ensure(w.abs(parent))
	p := parent + "/" + name
	if _, err := w.conn.Create(w.abs(p), data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		w.t.Fatalf("create %s: %v", model.Clip(p, 120), err)
	}
	return p
}

func (w *dubboWriter) delete(p string) {
	w.t.Helper()
	if err := w.conn.Delete(w.abs(p), -1); err != nil {
		w.t.Fatalf("delete %s: %v", model.Clip(p, 120), err)
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

// ---------------------------------------------------------------------------------------
// A TCP proxy in front of ZooKeeper that can cut connections and expire the session

type zkProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu        sync.Mutex
	blocked   bool
	conns     map[net.Conn]struct{}
	sessionID int64
	passwd    []byte
}

func newProxy(t testing.TB, target string) *zkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &zkProxy{t: t, ln: ln, target: strings.Split(target, ",")[0], conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
	})
	return p
}

func (p *zkProxy) addr() string { return p.ln.Addr().String() }

func (p *zkProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		blocked := p.blocked
		p.mu.Unlock()
		if blocked {
			c.Close()
			continue
		}
		go p.pipe(c)
	}
}

func (p *zkProxy) pipe(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		delete(p.conns, server)
		p.mu.Unlock()
		client.Close()
		server.Close()
	}()
	go func() {
		_, _ = io.Copy(server, client)
		server.Close()
	}()
	// The first packet from the server answers the connect request: note the session.
	var hdr [4]byte
	if _, err := io.ReadFull(server, hdr[:]); err != nil {
		return
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 1<<16 {
		return
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(server, body); err != nil {
		return
	}
	// protocolVersion int32, timeout int32, sessionID int64, passwd (int32 length + bytes)
	if len(body) >= 20 {
		sid := int64(binary.BigEndian.Uint64(body[8:16]))
		pl := int(binary.BigEndian.Uint32(body[16:20]))
		if sid != 0 && pl >= 0 && 20+pl <= len(body) {
			p.mu.Lock()
			p.sessionID, p.passwd = sid, append([]byte(nil), body[20:20+pl]...)
			p.mu.Unlock()
		}
	}
	if _, err := client.Write(append(hdr[:], body...)); err != nil {
		return
	}
	_, _ = io.Copy(client, server)
}

// cut closes every proxied connection.
func (p *zkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// block refuses new connections and cuts the existing ones; unblock lets them through again.
func (p *zkProxy) block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
	p.cut()
}

func (p *zkProxy) unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

func (p *zkProxy) session() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sessionID
}

// expireSession ends the session the proxied client holds, the way the ZooKeeper test suites
// do: a second client attaches to the same session (the server then drops the first client's
// connection) and closes it. The first client's next reconnect finds the session expired.
func (p *zkProxy) expireSession() error {
	p.mu.Lock()
	sid, passwd := p.sessionID, p.passwd
	p.mu.Unlock()
	if sid == 0 {
		return errors.New("no session seen yet")
	}
	c, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))

	// ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd.
	req := binary.BigEndian.AppendUint32(nil, 0)
	req = binary.BigEndian.AppendUint64(req, 0)
	req = binary.BigEndian.AppendUint32(req, 30000)
	req = binary.BigEndian.AppendUint64(req, uint64(sid))
	req = binary.BigEndian.AppendUint32(req, uint32(len(passwd)))
	req = append(req, passwd...)
	if err := writePacket(c, req); err != nil {
		return err
	}
	resp, err := readPacket(c)
	if err != nil {
		return fmt.Errorf("connect response: %w", err)
	}
	if len(resp) < 16 || binary.BigEndian.Uint64(resp[8:16]) == 0 {
		return errors.New("session already expired")
	}
	// closeSession: RequestHeader{xid, type=-11}.
	closeReq := binary.BigEndian.AppendUint32(nil, 1)
	closeReq = binary.BigEndian.AppendUint32(closeReq, uint32(0xFFFFFFF5))
	if err := writePacket(c, closeReq); err != nil {
		return err
	}
	if _, err := readPacket(c); err != nil {
		return fmt.Errorf("close response: %w", err)
	}
	return nil
}

func writePacket(c net.Conn, body []byte) error {
	_, err := c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
	return err
}

func readPacket(c net.Conn) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(c, body)
	return body, err
}
