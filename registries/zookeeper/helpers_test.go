package zookeeper

import (
	"bufio"
	"context"
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

// ---------------------------------------------------------------------------------------
// Recording emitter

type event struct {
	kind     string // snapshot, upsert, delete, health, reject
	services []sdk.Service
	svc      sdk.Service
	key      string
	ok       bool
	msg      string
	at       time.Time
}

// recorder is an sdk.Emitter that keeps every event and the resulting state.
type recorder struct {
	mu      sync.Mutex
	events  []event
	state   map[string]sdk.Service
	changed chan struct{} // closed and replaced on every event
}

func newRecorder() *recorder {
	return &recorder{state: map[string]sdk.Service{}, changed: make(chan struct{})}
}

func (r *recorder) add(ev event) {
	ev.at = time.Now()
	r.mu.Lock()
	r.events = append(r.events, ev)
	switch ev.kind {
	case "snapshot":
		clear(r.state)
		for _, s := range ev.services {
			r.state[s.Key] = s
		}
	case "upsert":
		r.state[ev.svc.Key] = ev.svc
	case "delete":
		delete(r.state, ev.key)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) Snapshot(services []sdk.Service) {
	r.add(event{kind: "snapshot", services: services})
}
func (r *recorder) Upsert(svc sdk.Service)     { r.add(event{kind: "upsert", svc: svc, key: svc.Key}) }
func (r *recorder) Delete(key string)          { r.add(event{kind: "delete", key: key}) }
func (r *recorder) Health(ok bool, msg string) { r.add(event{kind: "health", ok: ok, msg: msg}) }
func (r *recorder) Reject(item, reason string) { r.add(event{kind: "reject", key: item, msg: reason}) }

// mark returns the number of events so far, to look only at later ones.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) since(mark int) []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]event(nil), r.events[mark:]...)
}

// waitFor waits until cond holds for the events after mark and returns the index (absolute)
// of the event that made it hold.
func (r *recorder) waitFor(t testing.TB, mark int, timeout time.Duration, what string, cond func(ev event, state map[string]sdk.Service) bool) int {
	t.Helper()
	deadline := time.After(timeout)
	next := mark
	for {
		r.mu.Lock()
		for ; next < len(r.events); next++ {
			if cond(r.events[next], r.state) {
				r.mu.Unlock()
				return next
			}
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out after %s waiting for %s; events since mark:\n%s", timeout, what, r.dump(mark))
		}
	}
}

func (r *recorder) service(key string) (sdk.Service, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.state[key]
	return s, ok
}

func (r *recorder) dump(mark int) string {
	var b strings.Builder
	for _, ev := range r.since(mark) {
		switch ev.kind {
		case "snapshot":
			fmt.Fprintf(&b, "  snapshot (%d services)\n", len(ev.services))
			for _, s := range ev.services {
				fmt.Fprintf(&b, "    %s host=%s instances=%d\n", s.Key, s.Host, len(s.Instances))
			}
		case "upsert":
			fmt.Fprintf(&b, "  upsert %s host=%s instances=%d\n", ev.key, ev.svc.Host, len(ev.svc.Instances))
		case "delete":
			fmt.Fprintf(&b, "  delete %s\n", ev.key)
		case "health":
			fmt.Fprintf(&b, "  health %v %q\n", ev.ok, ev.msg)
		case "reject":
			fmt.Fprintf(&b, "  reject %s: %s\n", model.Clip(ev.key, 100), ev.msg)
		}
	}
	return b.String()
}

func isSnapshot(ev event, _ map[string]sdk.Service) bool { return ev.kind == "snapshot" }

// upsertWith matches an upsert of key with n instances.
func upsertWith(key string, n int) func(event, map[string]sdk.Service) bool {
	return func(ev event, _ map[string]sdk.Service) bool {
		return ev.kind == "upsert" && ev.key == key && len(ev.svc.Instances) == n
	}
}

func deleteOf(key string) func(event, map[string]sdk.Service) bool {
	return func(ev event, _ map[string]sdk.Service) bool { return ev.kind == "delete" && ev.key == key }
}

func rejectOf(itemSubstring string) func(event, map[string]sdk.Service) bool {
	return func(ev event, _ map[string]sdk.Service) bool {
		return ev.kind == "reject" && strings.Contains(ev.key, itemSubstring)
	}
}

// checkValid fails unless every service the recorder holds passes model.Validate unchanged.
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
// Running the plugin in process

type running struct {
	p    *Plugin
	rec  *recorder
	stop func()
}

// startPlugin configures and starts the plugin against address; it is stopped at cleanup and
// must not have returned from Watch before.
func startPlugin(t testing.TB, address string, options map[string]string, secrets map[string]string) *running {
	t.Helper()
	return startConfigured(t, New().(*Plugin), address, options, secrets)
}

// startConfigured is startPlugin for a plugin the test prepared.
func startConfigured(t testing.TB, p *Plugin, address string, options map[string]string, secrets map[string]string) *running {
	t.Helper()
	if err := p.Configure(context.Background(), sdk.Config{Registry: "test", Address: address, Options: options, Secrets: secrets}); err != nil {
		t.Fatalf("configure: %v", err)
	}
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Watch(ctx, rec) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			select {
			case err := <-done:
				t.Errorf("Watch returned early: %v", err)
				return
			default:
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Watch returned %v after cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Watch did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &running{p: p, rec: rec, stop: stop}
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
