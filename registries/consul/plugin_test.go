package consul

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

func TestConfigureDefaults(t *testing.T) {
	c := testConfig(t, nil)
	if c.address != "127.0.0.1:8500" || c.scheme != "http" || len(c.datacenters) != 0 || c.defaultProtocol != "" ||
		c.maxWatches != defaultMaxWatches || c.waitTime != defaultWaitTime || c.includeWarning {
		t.Fatalf("defaults: %+v", c)
	}
	if c.wanted("consul") || !c.wanted("web") {
		t.Fatal("the consul service must be excluded by default, others not")
	}
	if !c.excludeLabels["timestamp"] || !c.excludeLabels["pid"] {
		t.Fatal("volatile keys not excluded by default")
	}
}

func TestParseAddress(t *testing.T) {
	for in, want := range map[string]string{
		"consul:8500":           "http://consul:8500",
		"consul":                "http://consul:8500",
		"https://consul":        "https://consul:8501",
		"http://10.0.0.1:1234":  "http://10.0.0.1:1234",
		"[2001:db8::1]:8500":    "http://[2001:db8::1]:8500",
		" https://c.example:9 ": "https://c.example:9",
	} {
		scheme, addr, err := parseAddress(in)
		if err != nil || scheme+"://"+addr != want {
			t.Errorf("parseAddress(%q) = %s://%s, %v; want %s", in, scheme, addr, err, want)
		}
	}
	for _, bad := range []string{"", "ftp://x:1", "x:0", "x:99999", "http://x:1/path", "user@x:1", "x:port", "[::1"} {
		if _, _, err := parseAddress(bad); err == nil {
			t.Errorf("parseAddress(%q) accepted", bad)
		}
	}
}

func TestConfigureErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		address string
		opts    map[string]string
		secrets map[string]string
		field   string
	}{
		{name: "no address", field: "address"},
		{name: "bad datacenter", opts: map[string]string{"datacenters": "dc1,dc 2"}, field: "datacenters"},
		{name: "template field", opts: map[string]string{"hostTemplate": "{{.Nope}}"}, field: "hostTemplate"},
		{name: "template syntax", opts: map[string]string{"hostTemplate": "{{.Service"}, field: "hostTemplate"},
		{name: "template gives no host", opts: map[string]string{"hostTemplate": "{{.Service}}.."}, field: "hostTemplate"},
		{name: "bad default protocol", opts: map[string]string{"defaultProtocol": "http/2"}, field: "defaultProtocol"},
		{name: "service protocols", opts: map[string]string{"serviceProtocols": "web"}, field: "serviceProtocols"},
		{name: "bad pattern", opts: map[string]string{"services": "web-["}, field: "services"},
		{name: "watches", opts: map[string]string{"maxWatches": "0"}, field: "maxWatches"},
		{name: "wait too long", opts: map[string]string{"waitTime": "11m"}, field: "waitTime"},
		{name: "wait too short", opts: map[string]string{"waitTime": "10ms"}, field: "waitTime"},
		{name: "bool", opts: map[string]string{"includeWarning": "maybe"}, field: "includeWarning"},
		{name: "TLS on http", opts: map[string]string{"tlsInsecureSkipVerify": "true"}, field: "tlsInsecureSkipVerify"},
		{name: "cert without key", address: "https://c", opts: map[string]string{"tlsCertFile": "/x"}, field: "tlsCertFile"},
		{name: "missing CA file", address: "https://c", opts: map[string]string{"tlsCAFile": filepath.Join(dir, "none.pem")}, field: "tlsCAFile"},
		{name: "token as plain option", opts: map[string]string{"token": "abc"}, field: "token"},
		{name: "unknown option", opts: map[string]string{"tags": "x"}, field: "tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			address := tc.address
			if address == "" && tc.field != "address" {
				address = "127.0.0.1:8500"
			}
			err := New().Configure(context.Background(), sdk.Config{Registry: "r", Address: address, Options: tc.opts, Secrets: tc.secrets})
			if err == nil {
				t.Fatal("accepted")
			}
			fields := sdk.AsFieldErrors(err)
			for _, fe := range fields {
				if fe.Field == tc.field {
					return
				}
			}
			t.Fatalf("no error for field %s: %v", tc.field, err)
		})
	}
}

func TestConfigureErrorsDoNotShowTheToken(t *testing.T) {
	const token = "s3cr3t-token-value"
	err := New().Configure(context.Background(), sdk.Config{Registry: "r", Address: "x:0",
		Options: map[string]string{"hostTemplate": token + "{{"}, Secrets: map[string]string{"token": token}})
	if err == nil {
		t.Fatal("accepted")
	}
	// The SDK redacts secrets from what leaves the plugin; the plugin itself never puts the
	// token into an error (the template text here is the user's own plain option).
	for _, fe := range sdk.AsFieldErrors(err) {
		if fe.Field != "hostTemplate" && strings.Contains(fe.Message, token) {
			t.Errorf("%s: %s", fe.Field, fe.Message)
		}
	}
}

// TestClientIgnoresEnvironment: CONSUL_* variables of the process never reach the agent.
func TestClientIgnoresEnvironment(t *testing.T) {
	t.Setenv("CONSUL_HTTP_TOKEN", "from-env")
	t.Setenv("CONSUL_NAMESPACE", "ns-from-env")
	t.Setenv("CONSUL_PARTITION", "part-from-env")
	t.Setenv("CONSUL_HTTP_ADDR", "203.0.113.1:1")
	seen := make(chan *http.Request, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("X-Consul-Index", "7")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)

	for _, token := range []string{"", "configured"} {
		c := testConfig(t, nil)
		c.address, c.token = strings.TrimPrefix(srv.URL, "http://"), token
		client, err := newClient(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := client.Catalog().Services(nil); err != nil {
			t.Fatal(err)
		}
		r := <-seen
		if got := r.Header.Get("X-Consul-Token"); got != token {
			t.Errorf("token sent %q, want %q", got, token)
		}
		if q := r.URL.Query(); q.Has("ns") || q.Has("partition") {
			t.Errorf("enterprise scoping from the environment sent: %s", r.URL.RawQuery)
		}
	}
}

func TestQueryLoopIndexRules(t *testing.T) {
	var l queryLoop
	ctx := context.Background()
	if l.blocking() {
		t.Fatal("the first query must not block")
	}
	if next, ok := l.result(ctx, &api.QueryMeta{LastIndex: 0}, nil); next != 1 || !ok {
		t.Fatalf("index 0 gives %d, %v; want 1 (Consul's guidance)", next, ok)
	}
	l.index = 10
	if !l.blocking() {
		t.Fatal("with an index, queries block")
	}
	if _, ok := l.result(ctx, &api.QueryMeta{LastIndex: 12}, nil); !ok {
		t.Fatal("a higher index is not backwards")
	}
	// A blocking answer with a lower index is not trusted: a consistent read decides.
	if next, ok := l.result(ctx, &api.QueryMeta{LastIndex: 9}, nil); !ok || next != 10 || l.blocking() {
		t.Fatalf("a lower index from a blocking query gives %d, %v, blocking %v; want a consistent read next", next, ok, l.blocking())
	}
	if next, ok := l.result(ctx, &api.QueryMeta{LastIndex: 9}, nil); ok || next != 9 {
		t.Fatal("a lower index from a consistent read must be reported as backwards")
	}
	l.result(ctx, nil, os.ErrDeadlineExceeded)
	if l.blocking() {
		t.Fatal("after an error the next query must not block: the server may have changed")
	}
	l.result(ctx, &api.QueryMeta{LastIndex: 10}, nil)
	if !l.blocking() {
		t.Fatal("after a good answer queries block again")
	}
}

// TestQueryModes: reads that do not block are consistent, blocking ones carry the index;
// a blocking query that net/http resends on a new connection is stopped.
func TestQueryModes(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	dropNext := false
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		return queries[len(queries)-1]
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		drop := dropNext
		dropNext = false
		mu.Unlock()
		if drop {
			// A server going away: the connection closes without an answer.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		w.Header().Set("X-Consul-Index", "7")
		_, _ = w.Write([]byte(`{}`))
	}))
	t.Cleanup(srv.Close)
	c := testConfig(t, nil)
	c.address = strings.TrimPrefix(srv.URL, "http://")
	client, err := newClient(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	read := func(q *api.QueryOptions) (*api.QueryMeta, error) {
		_, meta, err := client.Catalog().Services(q)
		return meta, err
	}

	var l queryLoop
	meta, err := l.query(ctx, "", 0, read)
	if err != nil {
		t.Fatal(err)
	}
	if q := last(); !strings.Contains(q, "consistent") || strings.Contains(q, "index=") {
		t.Errorf("non-blocking read sent %q, want consistent and no index", q)
	}
	l.index, _ = l.result(ctx, meta, nil)
	if _, err := l.query(ctx, "", time.Minute, read); err != nil {
		t.Fatal(err)
	}
	if q := last(); strings.Contains(q, "consistent") || !strings.Contains(q, "index=7") || !strings.Contains(q, "wait=60000ms") {
		t.Errorf("blocking query sent %q", q)
	}

	mu.Lock()
	dropNext = true
	mu.Unlock()
	if _, err := l.query(ctx, "", time.Minute, read); !errors.Is(err, errUnverified) || l.blocking() {
		t.Fatalf("blocking query resent on a new connection: %v, blocking next %v", err, l.blocking())
	}
}

func TestBlockingWaitTakesTurns(t *testing.T) {
	w := &watcher{cfg: testConfig(t, map[string]string{"maxWatches": "10", "waitTime": "5m"}), stats: &watchStats{}}
	for _, tc := range []struct {
		services int64
		want     time.Duration
	}{
		{1, 5 * time.Minute},
		{10, 5 * time.Minute},
		{20, 5 * time.Second},
		{1000, time.Second},
	} {
		w.stats.watched.Store(tc.services)
		if got := w.blockingWait(); got != tc.want {
			t.Errorf("%d services: wait %v, want %v", tc.services, got, tc.want)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	var b backoff
	for i := range 20 {
		d := b.next()
		if d < minBackoff/2 || d > maxBackoff {
			t.Fatalf("step %d: %v outside [%v, %v]", i, d, minBackoff/2, maxBackoff)
		}
	}
	if b.d != maxBackoff {
		t.Fatalf("backoff does not reach its cap: %v", b.d)
	}
}
