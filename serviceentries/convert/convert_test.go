package convert

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/internal/golden"
	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

func dubbo(addr string, port uint32, labels map[string]string) catalog.Instance {
	return catalog.Instance{Address: addr, Port: port, Protocol: "dubbo", Labels: labels}
}

func TestServiceEntryGolden(t *testing.T) {
	opt := Options{Namespace: "meltemi-system"}
	tests := []struct {
		name     string
		host     string
		services []catalog.Service
		vip      string
		opt      Options
	}{
		{
			name: "dubbo-two-providers",
			host: "org.apache.dubbo.demo.demoservice",
			services: []catalog.Service{{
				Registry: "zk", Key: "dubbo:org.apache.dubbo.demo.DemoService", Host: "org.apache.dubbo.demo.demoservice",
				Instances: []catalog.Instance{
					dubbo("10.0.0.2", 20880, map[string]string{"version": "1.0.0", "group": "g1", "application": "demo"}),
					dubbo("10.0.0.1", 20880, map[string]string{"version": "2.0.0", "application": "demo"}),
				},
			}},
			opt: opt,
		},
		{
			name: "instances-on-different-ports",
			host: "svc.example",
			services: []catalog.Service{{
				Registry: "nacos", Key: "svc", Host: "svc.example",
				Instances: []catalog.Instance{
					dubbo("10.0.0.1", 20880, nil), dubbo("10.0.0.2", 20880, nil), dubbo("10.0.0.3", 20881, nil),
				},
			}},
			opt: opt,
		},
		{
			name: "several-protocols-and-unknown",
			host: "multi.example",
			services: []catalog.Service{{
				Registry: "zk", Key: "multi", Host: "multi.example",
				Instances: []catalog.Instance{
					dubbo("10.0.0.1", 20880, nil),
					{Address: "10.0.0.1", Port: 50051, Protocol: "tri"},
					{Address: "10.0.0.1", Port: 9000, Protocol: "weird"},
					{Address: "10.0.0.1", Port: 6379, Protocol: "redis"},
					{Address: "10.0.0.1", Port: 9092, Protocol: "kafka"},
					{Address: "10.0.0.1", Port: 2181, Protocol: "zookeeper"},
					{Address: "10.0.0.2", Port: 8080, Protocol: "http", Weight: 50, Locality: "eu/west-1/a"},
				},
			}},
			opt: opt,
		},
		{
			name: "two-processes-on-one-machine",
			host: "proc.example",
			services: []catalog.Service{{
				Registry: "zk", Key: "p", Host: "proc.example",
				Instances: []catalog.Instance{
					dubbo("10.0.0.1", 20880, nil), dubbo("10.0.0.1", 20881, nil),
					{Address: "10.0.0.1", Port: 50051, Protocol: "tri"}, dubbo("10.0.0.2", 20880, nil),
				},
			}},
			opt: opt,
		},
		{
			name: "merged-from-two-registries",
			host: "shared.example",
			services: []catalog.Service{
				{Registry: "nacos", Key: "a", Host: "shared.example", Instances: []catalog.Instance{dubbo("10.0.0.9", 20880, nil)}},
				{Registry: "zk", Key: "b", Host: "shared.example", Instances: []catalog.Instance{dubbo("10.0.0.1", 20880, nil), dubbo("10.0.0.9", 20880, nil)}},
			},
			opt: opt,
		},
		{
			name: "vip-and-workload-entries-above-limit",
			host: "big.example",
			vip:  "240.240.0.7",
			services: []catalog.Service{{
				Registry: "zk", Key: "big", Host: "big.example",
				Instances: []catalog.Instance{
					dubbo("10.0.0.1", 20880, map[string]string{"version": "1"}),
					dubbo("10.0.0.2", 20880, map[string]string{"version": "2"}),
					dubbo("10.0.0.3", 20881, nil),
				},
			}},
			opt: Options{Namespace: "mesh", MaxInlineEndpoints: 2},
		},
		{
			name: "port-number-shared-by-two-protocols",
			host: "clash.example",
			services: []catalog.Service{{
				Registry: "zk", Key: "c", Host: "clash.example",
				Instances: []catalog.Instance{dubbo("10.0.0.1", 8080, nil), {Address: "10.0.0.2", Port: 8080, Protocol: "http"}},
			}},
			opt: opt,
		},
		{
			name: "custom-protocol-mapping",
			host: "thrift.example",
			services: []catalog.Service{{
				Registry: "consul", Key: "t", Host: "thrift.example",
				Instances: []catalog.Instance{{Address: "10.0.0.1", Port: 9090, Protocol: "thrift"}, {Address: "10.0.0.2", Port: 7000, Protocol: ""}},
			}},
			opt: Options{Namespace: "mesh", Protocols: map[string]string{"thrift": "tcp-thrift"}, UnknownProtocol: "tcp-opaque"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Convert(Input{Host: tc.host, Services: tc.services, VIP: tc.vip}, tc.opt)
			if res == nil {
				t.Fatal("got no objects")
			}
			got, err := marshalResult(res)
			if err != nil {
				t.Fatal(err)
			}
			golden.Check(t, filepath.Join("testdata", tc.name+".yaml"), got)

			// Output must not depend on the order the registry listed instances in.
			reversed := make([]catalog.Service, len(tc.services))
			for i, s := range tc.services {
				s.Instances = append([]catalog.Instance(nil), s.Instances...)
				for l, r := 0, len(s.Instances)-1; l < r; l, r = l+1, r-1 {
					s.Instances[l], s.Instances[r] = s.Instances[r], s.Instances[l]
				}
				s.Normalize()
				reversed[i] = s
			}
			for i := range tc.services {
				tc.services[i].Normalize()
			}
			a, _ := marshalResult(Convert(Input{Host: tc.host, Services: tc.services, VIP: tc.vip}, tc.opt))
			b, _ := marshalResult(Convert(Input{Host: tc.host, Services: reversed, VIP: tc.vip}, tc.opt))
			if string(a) != string(b) {
				t.Errorf("output depends on instance order:\n%s\n---\n%s", a, b)
			}
		})
	}
}

func TestServiceEntryNoInstances(t *testing.T) {
	svc := []catalog.Service{{Registry: "zk", Key: "k", Host: "h.example"}}
	if res := Convert(Input{Host: "h.example", Services: svc}, Options{}); res != nil {
		t.Fatalf("want nil for a service without instances, got %+v", res)
	}
	if res := Convert(Input{Host: "h.example"}, Options{}); res != nil {
		t.Fatalf("want nil for no services, got %+v", res)
	}
}

func TestPortNames(t *testing.T) {
	tests := []struct {
		protocol string
		opt      Options
		want     string
		istio    string
	}{
		{"dubbo", Options{}, "tcp-metaprotocol-dubbo-20880", "TCP"},
		{"thrift", Options{}, "tcp-metaprotocol-thrift-20880", "TCP"},
		{"tri", Options{}, "grpc-tri-20880", "GRPC"},
		{"http", Options{}, "http-20880", "HTTP"},
		{"", Options{}, "tcp-20880", "TCP"},
		{"mystery", Options{UnknownProtocol: "tcp-dubbo"}, "tcp-dubbo-20880", "TCP"},
		{"dubbo", Options{Protocols: map[string]string{"dubbo": "tcp-dubbo"}}, "tcp-dubbo-20880", "TCP"},
		{"dubbo", Options{Protocols: mustProtocols(t, PortNamingNative)}, "tcp-dubbo-20880", "TCP"},
		{"thrift", Options{Protocols: mustProtocols(t, PortNamingNative)}, "tcp-thrift-20880", "TCP"},
		{"tri", Options{Protocols: mustProtocols(t, PortNamingNative)}, "grpc-tri-20880", "GRPC"},
		{"dubbo", Options{Protocols: mustProtocols(t, PortNamingMetaProtocol)}, "tcp-metaprotocol-dubbo-20880", "TCP"},
	}
	for _, tc := range tests {
		res := Convert(Input{Host: "h.example", Services: []catalog.Service{{Registry: "r", Key: "k", Host: "h.example",
			Instances: []catalog.Instance{{Address: "10.0.0.1", Port: 20880, Protocol: tc.protocol}}}}}, tc.opt)
		if got := res.ServiceEntry.Spec.Ports[0]; got.Name != tc.want || got.Protocol != tc.istio {
			t.Errorf("protocol %q: got port %s/%s, want %s/%s", tc.protocol, got.Name, got.Protocol, tc.want, tc.istio)
		}
	}
}

func mustProtocols(t *testing.T, naming string) map[string]string {
	t.Helper()
	p, err := ProtocolsFor(naming)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// marshalResult renders a result as one YAML stream: the ServiceEntry, then its
// WorkloadEntries.
func marshalResult(res *Result) ([]byte, error) {
	out, err := yaml.Marshal(res.ServiceEntry)
	if err != nil {
		return nil, err
	}
	for _, we := range res.WorkloadEntries {
		b, err := yaml.Marshal(we)
		if err != nil {
			return nil, err
		}
		out = append(append(out, "---\n"...), b...)
	}
	return out, nil
}

// Weights are written only where they differ, and then on every endpoint, the registry's
// default standing for instances that have none.
func TestWeights(t *testing.T) {
	svc := func(weights ...uint32) []catalog.Service {
		s := catalog.Service{Registry: "r", Key: "k", Host: "h.example"}
		for i, w := range weights {
			s.Instances = append(s.Instances, catalog.Instance{Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 80, Protocol: "http", Weight: w})
		}
		return []catalog.Service{s}
	}
	for _, tc := range []struct {
		name    string
		weights []uint32
		want    []uint32
	}{
		{"none", []uint32{0, 0}, []uint32{0, 0}},
		{"all the default, explicitly", []uint32{catalog.DefaultWeight, catalog.DefaultWeight}, []uint32{0, 0}},
		{"all equal", []uint32{7, 7, 7}, []uint32{0, 0, 0}},
		{"one differs", []uint32{0, 50}, []uint32{catalog.DefaultWeight, 50}},
		{"default equals a given weight", []uint32{0, catalog.DefaultWeight}, []uint32{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Convert(Input{Host: "h.example", Services: svc(tc.weights...)}, Options{Namespace: "ns"})
			var got []uint32
			for _, ep := range res.ServiceEntry.Spec.Endpoints {
				got = append(got, ep.Weight)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("weights %v, want %v", got, tc.want)
			}
		})
	}
}
