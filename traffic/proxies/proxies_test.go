package proxies

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestProfilesHoldWhatTheBuildsHold spot-checks each profile against facts of its build: the
// filters Meltemi writes that the proxy has, and those it does not.
func TestProfilesHoldWhatTheBuildsHold(t *testing.T) {
	for _, tc := range []struct {
		profile      string
		has, hasNot  []string
		metaProtocol bool
	}{
		{profile: "istio-proxy-1.30",
			has:    []string{"envoy.filters.network.dubbo_proxy", "envoy.filters.dubbo.router", "envoy.filters.network.thrift_proxy", "envoy.filters.thrift.router", "envoy.filters.network.redis_proxy", "envoy.clusters.redis", "envoy.filters.network.zookeeper_proxy", "envoy.filters.network.rbac", "envoy.filters.network.local_ratelimit", "envoy.access_loggers.file", "envoy.filters.network.tcp_proxy"},
			hasNot: []string{"envoy.filters.network.kafka_broker", "envoy.filters.dubbo.rbac", "envoy.filters.network.meta_protocol_proxy", "envoy.filters.network.generic_proxy", "envoy.transport_sockets.tcp_stats"}},
		{profile: "istio-proxy-1.31",
			has:    []string{"envoy.filters.network.dubbo_proxy", "envoy.filters.dubbo.router", "envoy.filters.network.thrift_proxy", "envoy.filters.network.redis_proxy", "envoy.filters.network.zookeeper_proxy", "envoy.filters.network.rbac", "envoy.filters.network.postgres_proxy"},
			hasNot: []string{"envoy.filters.network.kafka_broker", "envoy.filters.dubbo.rbac", "aeraki.meta_protocol.codec.dubbo"}},
		{profile: "metaprotocol-1.4.2", metaProtocol: true,
			has:    []string{"envoy.filters.network.meta_protocol_proxy", "aeraki.meta_protocol.codec.dubbo", "aeraki.meta_protocol.filters.istio_stats", "envoy.filters.network.dubbo_proxy"},
			hasNot: []string{"envoy.filters.network.kafka_broker", "envoy.filters.dubbo.rbac"}},
	} {
		p, err := Get(tc.profile)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tc.has {
			if !p.Has(e) {
				t.Errorf("%s lacks %s", p, e)
			}
		}
		for _, e := range tc.hasNot {
			if p.Has(e) {
				t.Errorf("%s has %s", p, e)
			}
		}
		if p.MetaProtocol != tc.metaProtocol || p.Title == "" {
			t.Errorf("%s: MetaProtocol %v, title %q", p.Name, p.MetaProtocol, p.Title)
		}
	}
	if _, err := Get("istio-proxy-0.1"); err == nil {
		t.Error("an unknown profile was found")
	}
	if !slices.Contains(Names(), DefaultStock) || !slices.Contains(Names(), DefaultMetaProtocol) {
		t.Errorf("defaults missing from %v", Names())
	}
}

func TestMissingExtensions(t *testing.T) {
	var patch any
	if err := yaml.Unmarshal([]byte(`
name: envoy.filters.network.dubbo_proxy
typed_config:
  '@type': type.googleapis.com/envoy.extensions.filters.network.dubbo_proxy.v3.DubboProxy
  stat_prefix: inbound|20880||
  route_config: [{name: local, interface: '*', routes: [{match: {method: {name: {safe_regex: {regex: '.*'}}}}, route: {cluster: 'inbound|20880||'}}]}]
  dubbo_filters:
  - {name: envoy.filters.dubbo.rbac, config: {rules: {}}}
  - {name: envoy.filters.dubbo.router}
`), &patch); err != nil {
		t.Fatal(err)
	}
	want := []string{"envoy.filters.dubbo.rbac", "envoy.filters.dubbo.router", "envoy.filters.network.dubbo_proxy"}
	if got := Extensions(patch); !slices.Equal(got, want) {
		t.Errorf("Extensions = %v, want %v (route names and stat prefixes are not extensions)", got, want)
	}
	p, _ := Get(DefaultStock)
	if got := p.Missing(patch); !slices.Equal(got, []string{"envoy.filters.dubbo.rbac"}) {
		t.Errorf("Missing = %v", got)
	}
}

// TestDocumentedCompatibility checks the compatibility table of docs/data-plane.md against the
// profiles, cell by cell.
func TestDocumentedCompatibility(t *testing.T) {
	data, err := os.ReadFile("../../docs/data-plane.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	start := strings.Index(doc, "<!-- compatibility table")
	end := strings.Index(doc, "<!-- end of compatibility table -->")
	if start < 0 || end < start {
		t.Fatal("no compatibility table in docs/data-plane.md")
	}
	var columns []string
	rows := 0
	for _, line := range strings.Split(doc[start:end], "\n") {
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if columns == nil {
			columns = cells[1:]
			continue
		}
		ext := regexp.MustCompile("`([a-z0-9_.]+)`\\)$").FindStringSubmatch(cells[0])
		if ext == nil {
			t.Errorf("row %q names no extension", cells[0])
			continue
		}
		rows++
		for i, cell := range cells[1:] {
			p, err := Get(columns[i])
			if err != nil {
				t.Fatal(err)
			}
			if want := p.Has(ext[1]); (cell == "yes") != want {
				t.Errorf("%s × %s: the table says %s, the profile %v", ext[1], p.Name, cell, want)
			}
		}
	}
	if rows == 0 || len(columns) != len(Names()) {
		t.Errorf("table: %d rows, columns %v; profiles %v", rows, columns, Names())
	}
}

func TestExtensionsInJSON(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want []string
	}{
		{`{"name":"envoy.filters.network.dubbo_proxy","typed_config":{"dubbo_filters":[{"name":"envoy.filters.dubbo.rbac"},{"name" : "envoy.filters.dubbo.router"}]}}`,
			[]string{"envoy.filters.dubbo.rbac", "envoy.filters.dubbo.router", "envoy.filters.network.dubbo_proxy"}},
		// Not extensions: a route's name, a string value "name", a key ending in \"name, an escaped value.
		{`{"name":"local","route":{"cluster":"name"},"x\"name":"envoy.filters.a","k":["name",{"name":"envoy.filters.b\u0041"}]}`, nil},
		{"{\n  \"name\": \"aeraki.meta_protocol.codec.dubbo\"\n}", []string{"aeraki.meta_protocol.codec.dubbo"}},
		{`{"name":"envoy.x","a":{"name":"envoy.x"}}`, []string{"envoy.x"}},
		{`{"name":"envoy.unterminated`, nil},
	} {
		if got := ExtensionsInJSON([]byte(tc.doc)); !slices.Equal(got, tc.want) {
			t.Errorf("ExtensionsInJSON(%s) = %v, want %v", tc.doc, got, tc.want)
		}
	}
}
