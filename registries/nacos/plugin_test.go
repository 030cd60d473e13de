package nacos

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

func TestDescribe(t *testing.T) {
	d := New().Describe()
	if d.Kind != "nacos" || d.Version == "" {
		t.Fatalf("kind %q version %q", d.Kind, d.Version)
	}
	byName := map[string]sdk.Option{}
	for _, o := range d.Options {
		if o.Description == "" {
			t.Errorf("option %s has no description", o.Name)
		}
		byName[o.Name] = o
	}
	for name, def := range map[string]string{
		"namespaces": "public", "groups": "DEFAULT_GROUP", "listInterval": "500ms", "recoveryGrace": "30s",
		"defaultProtocol": "tcp", "hostTemplate": defaultHostTemplate, "dubboHostTemplate": "{{.Interface}}",
	} {
		if byName[name].Default != def {
			t.Errorf("option %s default = %q, want %q", name, byName[name].Default, def)
		}
	}
	for _, name := range []string{"username", "password", "accessKey", "secretKey"} {
		if !byName[name].Secret {
			t.Errorf("option %s is not secret", name)
		}
	}
	if d, err := time.ParseDuration(byName["listInterval"].Default); err != nil || d > 5*time.Second {
		t.Errorf("default list interval %s is not at most 5s", byName["listInterval"].Default)
	}
}

func TestConfigure(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     sdk.Config
		check   func(t *testing.T, c *config)
		wantErr []string // fields with errors
	}{
		{
			name: "defaults",
			cfg:  sdk.Config{Address: "nacos"},
			check: func(t *testing.T, c *config) {
				if len(c.servers) != 1 || c.servers[0] != (server{"nacos", 8848}) || c.tls || c.contextPath != "/nacos" || c.grpcOffset != 1000 {
					t.Fatalf("config = %+v", c)
				}
				if g, ok := c.sel.groupsFor("public"); !ok || g.String() != "DEFAULT_GROUP" || c.sel.all {
					t.Fatalf("selection = %+v", c.sel)
				}
				if c.listInterval != 500*time.Millisecond || c.recoveryGrace != 30*time.Second || c.timeout != 5*time.Second || c.defaultProtocol != "tcp" || c.clusters != nil {
					t.Fatalf("config = %+v", c)
				}
			},
		},
		{
			name: "everything set",
			cfg: sdk.Config{
				Address: " https://n1:443/ , n2:8849,[::1]:8850 ",
				Options: map[string]string{
					"namespaces": "public:DEFAULT_GROUP,orders;dev", "groups": "g1", "clusters": "c1, c2",
					"listInterval": "1s", "recoveryGrace": "0", "timeout": "2s", "defaultProtocol": "HTTP",
					"contextPath": "nacos-api/", "grpcPortOffset": "1001", "tlsCAFile": ca,
				},
				Secrets: map[string]string{"username": "u", "password": "p", "unrelated": "x"},
			},
			check: func(t *testing.T, c *config) {
				want := []server{{"n1", 443}, {"n2", 8849}, {"::1", 8850}}
				if !slices.Equal(c.servers, want) || !c.tls || c.tlsCAFile != ca || c.contextPath != "/nacos-api" || c.grpcOffset != 1001 {
					t.Fatalf("config = %+v", c)
				}
				if g, _ := c.sel.groupsFor("public"); g.String() != "DEFAULT_GROUP,orders" {
					t.Fatalf("public groups = %s", g)
				}
				if g, _ := c.sel.groupsFor("dev"); g.String() != "g1" {
					t.Fatalf("dev groups = %s", g)
				}
				if _, ok := c.sel.groupsFor("prod"); ok {
					t.Fatal("prod selected")
				}
				if c.listInterval != time.Second || c.recoveryGrace != 0 || c.timeout != 2*time.Second || c.defaultProtocol != "http" ||
					!c.clusters["c1"] || !c.clusters["c2"] || c.creds.username != "u" || c.creds.password != "p" {
					t.Fatalf("config = %+v", c)
				}
			},
		},
		{name: "no address", cfg: sdk.Config{}, wantErr: []string{"address"}},
		{name: "bad scheme", cfg: sdk.Config{Address: "grpc://n:9848"}, wantErr: []string{"address"}},
		{name: "bad port", cfg: sdk.Config{Address: "n:0"}, wantErr: []string{"address"}},
		{name: "path in address", cfg: sdk.Config{Address: "http://n:8848/nacos"}, wantErr: []string{"address"}},
		{name: "gRPC port too high", cfg: sdk.Config{Address: "n:65000"}, wantErr: []string{"grpcPortOffset"}},
		{name: "unknown option", cfg: sdk.Config{Address: "n", Options: map[string]string{"namespace": "x"}}, wantErr: []string{"namespace"}},
		{name: "secret as option", cfg: sdk.Config{Address: "n", Options: map[string]string{"password": "x"}}, wantErr: []string{"password"}},
		{name: "password without user", cfg: sdk.Config{Address: "n", Secrets: map[string]string{"password": "x"}}, wantErr: []string{"username"}},
		{name: "access key without secret", cfg: sdk.Config{Address: "n", Secrets: map[string]string{"accessKey": "x"}}, wantErr: []string{"secretKey"}},
		{name: "bad namespace", cfg: sdk.Config{Address: "n", Options: map[string]string{"namespaces": "a b"}}, wantErr: []string{"namespaces"}},
		{name: "no groups", cfg: sdk.Config{Address: "n", Options: map[string]string{"groups": ","}}, wantErr: []string{"groups"}},
		{name: "interval too short", cfg: sdk.Config{Address: "n", Options: map[string]string{"listInterval": "50ms"}}, wantErr: []string{"listInterval"}},
		{name: "bad duration", cfg: sdk.Config{Address: "n", Options: map[string]string{"recoveryGrace": "soon"}}, wantErr: []string{"recoveryGrace"}},
		{name: "bad template", cfg: sdk.Config{Address: "n", Options: map[string]string{"hostTemplate": "{{.Interface}}"}}, wantErr: []string{"hostTemplate"}},
		{name: "bad Dubbo template", cfg: sdk.Config{Address: "n", Options: map[string]string{"dubboHostTemplate": "{{.Service}}"}}, wantErr: []string{"dubboHostTemplate"}},
		{name: "bad protocol", cfg: sdk.Config{Address: "n", Options: map[string]string{"defaultProtocol": "h t t p"}}, wantErr: []string{"defaultProtocol"}},
		{name: "CA without TLS", cfg: sdk.Config{Address: "n", Options: map[string]string{"tlsCAFile": ca}}, wantErr: []string{"tls"}},
		{name: "missing CA file", cfg: sdk.Config{Address: "n", Options: map[string]string{"tls": "true", "tlsCAFile": "/nonexistent/ca.pem"}}, wantErr: []string{"tlsCAFile"}},
		{
			name:    "every problem at once",
			cfg:     sdk.Config{Options: map[string]string{"listInterval": "1h", "defaultProtocol": "?"}},
			wantErr: []string{"address", "defaultProtocol", "listInterval"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New().(*Plugin)
			err := p.Configure(context.Background(), tt.cfg)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tt.check(t, p.config())
				return
			}
			if err == nil {
				t.Fatalf("no error, want errors for %v", tt.wantErr)
			}
			var fields []string
			for _, fe := range sdk.AsFieldErrors(err) {
				fields = append(fields, fe.Field)
			}
			slices.Sort(fields)
			if !slices.Equal(slices.Compact(fields), tt.wantErr) {
				t.Fatalf("errors on %v, want %v: %v", fields, tt.wantErr, err)
			}
			if p.config() != nil {
				t.Fatal("a rejected configuration was kept")
			}
		})
	}
}

func TestConfigureErrorsNeverShowSecrets(t *testing.T) {
	p := New()
	err := p.Configure(context.Background(), sdk.Config{Address: "", Secrets: map[string]string{"password": "hunter2-secret"}})
	if err == nil || strings.Contains(err.Error(), "hunter2-secret") {
		t.Fatalf("error %v", err)
	}
}
