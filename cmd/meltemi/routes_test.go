package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRoutesExplainFromFiles(t *testing.T) {
	const input = "../../bridge/traffic/testdata/dubbo-routes/input.yaml"
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
			var stdout, stderr bytes.Buffer
			err := routesCmd(context.Background(), args, &stdout, &stderr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			for _, line := range tc.want {
				if !strings.Contains(stdout.String(), line+"\n") {
					t.Errorf("output lacks %q:\n%s", line, stdout.String())
				}
			}
		})
	}
	var stderr bytes.Buffer
	if err := routesCmd(context.Background(), []string{"explain", "--host", "h"}, &bytes.Buffer{}, &stderr); err != errUsage {
		t.Errorf("missing --port: %v", err)
	}
}

func TestRoutesExplainNoRouteMatches(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"explain", "-f", "../../bridge/traffic/testdata/aeraki-semantics/input.yaml",
		"--host", "orders.shop.svc.cluster.local", "--port", "20880", "--attr", "method=cancel"}
	if err := routesCmd(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if want := `route                none of 1 matches: the proxy answers "no route"` + "\n"; !strings.Contains(stdout.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, stdout.String())
	}
}
