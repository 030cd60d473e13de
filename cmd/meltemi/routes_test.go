package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRoutesExplainFromFiles(t *testing.T) {
	const input = "../../traffic/testdata/dubbo-routes/input.yaml"
	for _, tc := range []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"weighted split with mirror", []string{"--attr", "method=getUser", "--attr", "user=alice", "--attr", "x-canary="},
			[]string{"route                canary (2 of 3)", "MetaRouter           default/demo",
				`match                method prefix "get", user regex "^(alice|bob)$", x-canary present`,
				"cluster              outbound|20880|v1|org.apache.dubbo.samples.demoservice (20%)",
				"cluster              outbound|20880|v2|org.apache.dubbo.samples.demoservice (80%)",
				"mirror               outbound|20880|v2|org.apache.dubbo.samples.demoservice (12.5%)",
				"hash by              user-id"}, ""},
		{"exact match with mutations", []string{"--attr", "interface=org.apache.dubbo.samples.DemoService", "--attr", "method=sayHello"},
			[]string{"route                say-hello-v1 (1 of 3)", "cluster              outbound|20880|v1|org.apache.dubbo.samples.demoservice (100%)",
				"request mutation     foo=bar", "response mutation    served-by=v1"}, ""},
		{"unknown port", []string{"--port", "1"}, nil, "has no port 1"},
		{"unknown host", []string{"--host", "nowhere.example.com"}, nil, "no ServiceEntry defines the host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"explain", "-f", input, "--host", "org.apache.dubbo.samples.demoservice", "--port", "20880"}, tc.args...)
			checkExplain(t, args, tc.want, tc.wantErr)
		})
	}
	var stderr bytes.Buffer
	if err := execute(context.Background(), []string{"routes", "explain", "--host", "h"}, &bytes.Buffer{}, &stderr); err == nil || !strings.Contains(err.Error(), `"port"`) {
		t.Errorf("missing --port: %v", err)
	}
}

func TestRoutesExplainNoRouteMatches(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"explain", "-f", "../../traffic/testdata/aeraki-semantics/input.yaml",
		"--host", "orders.shop.svc.cluster.local", "--port", "20880", "--attr", "method=cancel"}
	if err := execute(context.Background(), append([]string{"routes"}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if want := `route                none of 1 matches: the proxy answers "no route"` + "\n"; !strings.Contains(stdout.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, stdout.String())
	}
}

// Redis keys are explained like MetaProtocol attributes: longest prefix (case-insensitively
// here), the key as forwarded, mirrors, faults; without a key the error says what to give.
func TestRoutesExplainRedisKeys(t *testing.T) {
	const input = "../../traffic/testdata/redis-kafka-zookeeper/input.yaml"
	const host = "redis-cluster.redis.svc.cluster.local"
	for _, tc := range []struct {
		name, key string
		want      []string
		wantErr   string
	}{
		{"prefix route", "Cluster:7", []string{`route        prefix "cluster"`, "cluster      outbound|6379||" + host,
			"fault        ERROR on 50% of GET"}, ""},
		{"prefix removed", "user:42", []string{`route        prefix "user:"`, "cluster      outbound|6379||redis-single.redis.svc.cluster.local",
			"key sent     42"}, ""},
		{"catch-all with mirror", "session:1", []string{"route        catch-all (no prefix matches)",
			"cluster      outbound|6379||redis-single.redis.svc.cluster.local",
			"mirror       outbound|6379||" + host + " (100%, writes only)"}, ""},
		{"no key", "", nil, "--attr key=KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"explain", "-f", input, "--host", host, "--port", "6379"}
			if tc.key != "" {
				args = append(args, "--attr", "key="+tc.key)
			}
			checkExplain(t, args, tc.want, tc.wantErr)
		})
	}
}

// checkExplain runs routes explain and checks its error or the lines of its output.
func checkExplain(t *testing.T, args, want []string, wantErr string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := execute(context.Background(), append([]string{"routes"}, args...), &stdout, &stderr)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, line := range want {
		if !strings.Contains(stdout.String(), line+"\n") {
			t.Errorf("output lacks %q:\n%s", line, stdout.String())
		}
	}
}

// TestRoutesExplainTakesTheProxyProfile: explain translates with the run's proxy options, so it
// says when a MetaRouter's routes reach no proxy, and not when they do.
func TestRoutesExplainTakesTheProxyProfile(t *testing.T) {
	args := []string{"explain", "-f", "../../traffic/testdata/metaprotocol-off/input.yaml",
		"--host", "greeter.example.com", "--port", "20880", "--attr", "method=sayHello"}
	const warning = "has no MetaProtocol filter; the port keeps Istio's TCP handling"
	for _, tc := range []struct {
		extra       []string
		wantWarning bool
	}{
		{nil, true},
		{[]string{"--proxy", "metaprotocol-1.4.2"}, false},
		{[]string{"--metaprotocol-proxy-selector", "mesh.example/metaprotocol=on"}, false},
	} {
		var stdout bytes.Buffer
		if err := execute(context.Background(), append(append([]string{"routes"}, args...), tc.extra...), &stdout, &bytes.Buffer{}); err != nil {
			t.Fatalf("%v: %v", tc.extra, err)
		}
		if got := strings.Contains(stdout.String(), warning); got != tc.wantWarning || !strings.Contains(stdout.String(), "say-hello (1 of 1)") {
			t.Errorf("%v: warning shown %v, want %v:\n%s", tc.extra, got, tc.wantWarning, stdout.String())
		}
	}
	checkExplain(t, append(args, "--proxy", "istio-proxy-0.1"), nil, `no proxy profile "istio-proxy-0.1"`)
}
