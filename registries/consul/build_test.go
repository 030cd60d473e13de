package consul

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/meltemi-mesh/meltemi/internal/golden"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
)

// testConfig is a configuration as Configure makes it from opts.
func testConfig(t testing.TB, opts map[string]string) *config {
	t.Helper()
	c, err := parseConfig(sdk.Config{Registry: "r", Address: "127.0.0.1:8500", Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBuildGolden maps a recorded health response (every kind of registration: healthy,
// warning, critical node, maintenance, proxy, malformed) under two configurations.
func TestBuildGolden(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "orders.health.json"))
	if err != nil {
		t.Fatal(err)
	}
	var entries []*api.ServiceEntry
	if err := json.Unmarshal(raw, &entries); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]map[string]string{
		"orders.golden.json":         nil,
		"orders-warning.golden.json": {"includeWarning": "true", "hostTemplate": "{{.Service}}.{{.Datacenter}}.example", "excludeLabels": "env"},
	} {
		t.Run(name, func(t *testing.T) {
			svc, rejected, ok := buildService(testConfig(t, opts), serviceInput{Key: "dc1/orders", Name: "orders", Datacenter: "dc1", Entries: entries})
			if !ok {
				t.Fatal("no usable instance")
			}
			checkValid(t, svc)
			got, err := json.MarshalIndent(struct {
				Service  catalog.Service
				Rejected []rejection
			}{svc, rejected}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", name), append(got, '\n'))
		})
	}
}

func (r rejection) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"item": r.item, "reason": r.reason})
}

// TestBuildOrderIndependent: the same registrations in another order give the same service.
func TestBuildOrderIndependent(t *testing.T) {
	cfg := testConfig(t, nil)
	entries := []*api.ServiceEntry{
		entry("n1", "10.0.0.2", 80, nil, nil),
		entry("n2", "10.0.0.1", 80, []string{"a=b"}, nil),
		entry("n3", "10.0.0.1", 81, nil, nil),
	}
	first, _, _ := buildService(cfg, serviceInput{Key: "k", Name: "s", Datacenter: "dc", Entries: entries})
	reversed := []*api.ServiceEntry{entries[2], entries[1], entries[0]}
	second, _, _ := buildService(cfg, serviceInput{Key: "k", Name: "s", Datacenter: "dc", Entries: reversed})
	if !first.Equal(second) {
		t.Fatalf("order changed the result:\n%+v\n%+v", first, second)
	}
}

func entry(node, address string, port int, tags []string, meta map[string]string) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: node, Address: "192.168.0.1", Datacenter: "dc"},
		Service: &api.AgentService{ID: node + "-svc", Service: "s", Address: address, Port: port, Tags: tags, Meta: meta, Weights: api.AgentWeights{Passing: 1, Warning: 1}},
		Checks:  api.HealthChecks{{CheckID: "serfHealth", Status: api.HealthPassing}},
	}
}

func TestProtocolOf(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    map[string]string
		meta    map[string]string
		tags    map[string]string
		want    string
		wantErr bool
	}{
		{name: "nothing: tcp", want: "tcp"},
		{name: "registry default", opts: map[string]string{"defaultProtocol": "HTTP"}, want: "http"},
		{name: "service default before registry default", opts: map[string]string{"defaultProtocol": "http", "serviceProtocols": "s=grpc, other=thrift"}, want: "grpc"},
		{name: "tag before defaults", opts: map[string]string{"serviceProtocols": "s=grpc"}, tags: map[string]string{"protocol": "dubbo"}, want: "dubbo"},
		{name: "meta before tag", tags: map[string]string{"protocol": "dubbo"}, meta: map[string]string{"protocol": " Thrift "}, want: "thrift"},
		{name: "blank meta falls through", meta: map[string]string{"protocol": " "}, tags: map[string]string{"protocol": "tri"}, want: "tri"},
		{name: "bad meta", meta: map[string]string{"protocol": "http/1.1"}, wantErr: true},
		{name: "bad tag", tags: map[string]string{"protocol": "a b"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := protocolOf(testConfig(t, tc.opts), "s", tc.meta, tc.tags)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("protocolOf = %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestInstanceRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   map[string]string
		modify func(*api.ServiceEntry)
		use    bool
		err    bool
		check  func(catalog.Instance) bool
	}{
		{name: "plain", use: true, check: func(in catalog.Instance) bool {
			return in.Address == "10.0.0.1" && in.Port == 80 && in.Protocol == "tcp" && in.Locality == "dc" && in.Weight == catalog.DefaultWeight
		}},
		{name: "node address when the service has none", modify: func(e *api.ServiceEntry) { e.Service.Address = "" }, use: true,
			check: func(in catalog.Instance) bool { return in.Address == "192.168.0.1" }},
		{name: "ipv4-mapped address", modify: func(e *api.ServiceEntry) { e.Service.Address = "::ffff:10.1.2.3" }, use: true,
			check: func(in catalog.Instance) bool { return in.Address == "10.1.2.3" }},
		{name: "host name", modify: func(e *api.ServiceEntry) { e.Service.Address = "db.local" }, err: true},
		{name: "unspecified address", modify: func(e *api.ServiceEntry) { e.Service.Address = "0.0.0.0" }, err: true},
		{name: "zoned address", modify: func(e *api.ServiceEntry) { e.Service.Address = "fe80::1%eth0" }, err: true},
		{name: "port 0", modify: func(e *api.ServiceEntry) { e.Service.Port = 0 }, err: true},
		{name: "port too large", modify: func(e *api.ServiceEntry) { e.Service.Port = 70000 }, err: true},
		{name: "no node", modify: func(e *api.ServiceEntry) { e.Node = nil }, err: true},
		{name: "critical", modify: func(e *api.ServiceEntry) { e.Checks[0].Status = api.HealthCritical }},
		{name: "warning by default", modify: func(e *api.ServiceEntry) { e.Checks[0].Status = api.HealthWarning }},
		{name: "warning included", opts: map[string]string{"includeWarning": "true"},
			modify: func(e *api.ServiceEntry) { e.Checks[0].Status = api.HealthWarning; e.Service.Weights.Warning = 3 }, use: true,
			check: func(in catalog.Instance) bool { return in.Weight == 3*catalog.DefaultWeight }},
		{name: "warning weight 0 means no traffic", opts: map[string]string{"includeWarning": "true"},
			modify: func(e *api.ServiceEntry) { e.Checks[0].Status = api.HealthWarning; e.Service.Weights.Warning = 0 }},
		{name: "maintenance", modify: func(e *api.ServiceEntry) {
			e.Checks = append(e.Checks, &api.HealthCheck{CheckID: "_service_maintenance:x", Status: api.HealthMaint})
		}},
		{name: "gateway", modify: func(e *api.ServiceEntry) { e.Service.Kind = api.ServiceKindMeshGateway }},
		{name: "zone from service meta before locality and node meta", modify: func(e *api.ServiceEntry) {
			e.Service.Meta = map[string]string{"zone": "m"}
			e.Service.Locality = &api.Locality{Zone: "l"}
			e.Node.Meta = map[string]string{"zone": "n"}
		}, use: true, check: func(in catalog.Instance) bool { return in.Locality == "dc/m" }},
		{name: "zone from Consul locality", modify: func(e *api.ServiceEntry) {
			e.Service.Locality = &api.Locality{Region: "ignored", Zone: "l"}
			e.Node.Meta = map[string]string{"zone": "n"}
		}, use: true, check: func(in catalog.Instance) bool { return in.Locality == "dc/l" }},
		{name: "zone from node meta", modify: func(e *api.ServiceEntry) { e.Node.Meta = map[string]string{"zone": "n"} }, use: true,
			check: func(in catalog.Instance) bool { return in.Locality == "dc/n" }},
		{name: "zone with a slash is left out", modify: func(e *api.ServiceEntry) { e.Service.Meta = map[string]string{"zone": "a/b"} }, use: true,
			check: func(in catalog.Instance) bool { return in.Locality == "dc" }},
		{name: "labels", opts: map[string]string{"excludeLabels": "secret"}, modify: func(e *api.ServiceEntry) {
			e.Service.Tags = []string{"version=1", "env=prod", "plain", "=x", "bad key=1", "protocol=http", "meltemi.io/registry=x"}
			e.Service.Meta = map[string]string{"env": "dev", "secret": "s", "zone": "z", "long": string(bytes.Repeat([]byte("v"), 64))}
		}, use: true, check: func(in catalog.Instance) bool {
			return maps.Equal(in.Labels, map[string]string{"version": "1", "env": "dev"}) && in.Protocol == "http"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := entry("n", "10.0.0.1", 80, nil, nil)
			if tc.modify != nil {
				tc.modify(e)
			}
			in, use, err := buildInstance(testConfig(t, tc.opts), serviceInput{Key: "dc/s", Name: "s", Datacenter: "dc"}, e)
			if (err != nil) != tc.err || use != tc.use {
				t.Fatalf("use=%v err=%v; want use=%v err=%v", use, err, tc.use, tc.err)
			}
			if tc.check != nil && !tc.check(in) {
				t.Fatalf("instance %+v", in)
			}
		})
	}
}

func TestLabelsAreBounded(t *testing.T) {
	meta := map[string]string{}
	for i := range 100 {
		meta[string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	got := labels(testConfig(t, nil), nil, meta)
	if len(got) != maxInstanceLabels {
		t.Fatalf("%d labels, want %d", len(got), maxInstanceLabels)
	}
	if again := labels(testConfig(t, nil), nil, meta); !maps.Equal(got, again) {
		t.Fatal("the kept subset is not stable")
	}
}

// Consul's weights are relative to its default of 1; the mesh's to catalog.DefaultWeight.
func TestWeightsScaledToTheMeshDefault(t *testing.T) {
	cfg := testConfig(t, nil)
	plain := []*api.ServiceEntry{entry("a", "10.0.0.1", 80, nil, nil), entry("b", "10.0.0.2", 80, nil, nil)}
	plain[0].Service.Weights.Passing = 4
	plain[1].Service.Weights = api.AgentWeights{} // registered without weights
	svc, _, _ := buildService(cfg, serviceInput{Key: "k", Name: "s", Datacenter: "dc", Entries: plain})
	if svc.Instances[0].Weight != 4*catalog.DefaultWeight || svc.Instances[1].Weight != catalog.DefaultWeight {
		t.Fatalf("weights %+v, want %d and %d", svc.Instances, 4*catalog.DefaultWeight, catalog.DefaultWeight)
	}
}

func TestBuildRejectsBadHost(t *testing.T) {
	cfg := testConfig(t, map[string]string{"hostTemplate": "{{.Service}}.consul"})
	_, rejected, ok := buildService(cfg, serviceInput{Key: "dc/a..b", Name: "a..b", Datacenter: "dc",
		Entries: []*api.ServiceEntry{entry("n", "10.0.0.1", 80, nil, nil)}})
	if ok || len(rejected) != 1 || rejected[0].item != "dc/a..b" {
		t.Fatalf("ok=%v rejected=%v", ok, rejected)
	}
}
