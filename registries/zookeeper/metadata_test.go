package zookeeper

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// dubbo3Metadata is an application revision's MetadataInfo as Dubbo 3.2 writes it to
// /dubbo/metadata/<application>/<revision>: two interfaces, one of them on two protocols.
const dubbo3Metadata = `{"app":"demo-provider","revision":"a1b2c3d4e5f6","services":{` +
	`"org.apache.dubbo.demo.DemoService:dubbo":{"name":"org.apache.dubbo.demo.DemoService","protocol":"dubbo","port":20880,"path":"org.apache.dubbo.demo.DemoService",` +
	`"params":{"side":"provider","release":"3.2.10","methods":"sayHello,sayHelloAsync","deprecated":"false","dubbo":"2.0.2","interface":"org.apache.dubbo.demo.DemoService","service-name-mapping":"true","generic":"false","application":"demo-provider","background":"false","dynamic":"true","anyhost":"true"}},` +
	`"org.apache.dubbo.demo.DemoService:tri":{"name":"org.apache.dubbo.demo.DemoService","protocol":"tri","port":50051,"path":"org.apache.dubbo.demo.DemoService","params":{}},` +
	`"g1/org.apache.dubbo.demo.GreeterService:1.0.0:tri":{"name":"org.apache.dubbo.demo.GreeterService","group":"g1","version":"1.0.0","protocol":"tri","port":50051,"path":"org.apache.dubbo.demo.GreeterService","params":{}}}}`

func TestParseMetadataJSON(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		want    []ServiceMetadata
		wantErr string
	}{
		{name: "dubbo 3 metadata", data: dubbo3Metadata, want: []ServiceMetadata{
			{Interface: "org.apache.dubbo.demo.DemoService", Protocol: "dubbo", Port: 20880},
			{Interface: "org.apache.dubbo.demo.DemoService", Protocol: "tri", Port: 50051},
			{Interface: "org.apache.dubbo.demo.GreeterService", Group: "g1", Version: "1.0.0", Protocol: "tri", Port: 50051},
		}},
		{name: "no services", data: `{"app":"a","revision":"r"}`, want: []ServiceMetadata{}},
		{name: "port as string, upper-case protocol", data: `{"services":{"k":{"name":"I","protocol":"TRI","port":"50051"}}}`,
			want: []ServiceMetadata{{Interface: "I", Protocol: "tri", Port: 50051}}},
		{name: "port missing", data: `{"services":{"k":{"name":"I","protocol":"dubbo"}}}`,
			want: []ServiceMetadata{{Interface: "I", Protocol: "dubbo"}}},
		{name: "empty", data: "  ", wantErr: "no data"},
		{name: "not JSON", data: "demo-provider", wantErr: "not MetadataInfo JSON"},
		{name: "services is a list", data: `{"services":[]}`, wantErr: "not MetadataInfo JSON"},
		{name: "entry without name", data: `{"services":{"k":{"protocol":"dubbo"}}}`, wantErr: "has no interface name"},
		{name: "entry without protocol", data: `{"services":{"k":{"name":"I"}}}`, wantErr: "protocol"},
		{name: "bad protocol", data: `{"services":{"k":{"name":"I","protocol":"a b"}}}`, wantErr: "not a lower-case token"},
		{name: "bad port", data: `{"services":{"k":{"name":"I","protocol":"dubbo","port":70000}}}`, wantErr: "not a port"},
		{name: "name not a string", data: `{"services":{"k":{"name":7,"protocol":"dubbo"}}}`, wantErr: "name is not a string"},
		{name: "huge", data: `{"services":{}, "x":"` + strings.Repeat("a", 70<<10) + `"}`, wantErr: "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMetadataJSON([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseMapping(t *testing.T) {
	tests := []struct {
		data string
		want []string
	}{
		{"demo-provider", []string{"demo-provider"}},
		{"b-app,a-app, b-app ,", []string{"a-app", "b-app"}},
		{"", nil},
		{"ok,bad/name,..,\x00x", []string{"ok"}},
	}
	for _, tt := range tests {
		if got := ParseMapping([]byte(tt.data)); !slices.Equal(got, tt.want) {
			t.Errorf("ParseMapping(%q) = %q, want %q", tt.data, got, tt.want)
		}
	}
}

func TestValidRevision(t *testing.T) {
	for rev, want := range map[string]bool{
		"a1b2c3d4e5f6": true, "": false, "..": false, "a/b": false, strings.Repeat("f", 129): false, "x\x00": false,
	} {
		if got := validRevision(rev); got != want {
			t.Errorf("validRevision(%q) = %v, want %v", rev, got, want)
		}
	}
}

// TestMappedInstances checks which endpoints of an application serve a mapped interface,
// on a tree built by hand.
func TestMappedInstances(t *testing.T) {
	const iface = "org.apache.dubbo.demo.GreeterService"
	cfg := &config{roots: []string{"dubbo"}, mode: ModeApplication, mapInterfaces: true}
	inst := func(ip, rev string) AppInstance {
		ai, err := ParseInstanceJSON([]byte(strings.ReplaceAll(strings.ReplaceAll(dubbo3Instance, "192.168.1.10", ip), "a1b2c3d4e5f6", rev)))
		if err != nil {
			t.Fatal(err)
		}
		return ai
	}
	meta, err := ParseMetadataJSON([]byte(dubbo3Metadata))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		metas map[string][]ServiceMetadata // revision -> metadata; absent: no metadata node
		want  []string                     // "ip:port/protocol version"
	}{
		{name: "metadata restricts to the interface's protocols and adds its version",
			metas: map[string][]ServiceMetadata{"r1": meta, "r2": meta},
			want:  []string{"10.0.0.1:50051/tri 1.0.0", "10.0.0.2:50051/tri 1.0.0"}},
		{name: "a revision without metadata contributes all its endpoints",
			metas: map[string][]ServiceMetadata{"r1": meta},
			want:  []string{"10.0.0.1:50051/tri 1.0.0", "10.0.0.2:20880/dubbo ", "10.0.0.2:50051/tri "}},
		{name: "a revision whose metadata does not list the interface contributes nothing",
			metas: map[string][]ServiceMetadata{"r1": meta, "r2": meta[:1]},
			want:  []string{"10.0.0.1:50051/tri 1.0.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTree(cfg)
			as := &appState{key: "app:demo-provider", name: "demo-provider", instances: map[string]*appInstance{}}
			tr.apps[as.name] = as
			for ip, rev := range map[string]string{"10.0.0.1": "r1", "10.0.0.2": "r2"} {
				ai := inst(ip, rev)
				as.instances[ip] = &appInstance{revision: rev, endpoints: appInstances(as.name, ai)}
			}
			for rev, m := range tt.metas {
				ms := &metaState{root: "dubbo", app: as.name, ok: true, services: m}
				tr.meta[cfg.path("dubbo", "metadata", as.name, rev)] = ms
			}
			ms := &mappedState{key: "mapped:dubbo:" + iface, root: "dubbo", iface: iface}
			tr.mapped[ms.key] = ms
			tr.setMappedApps(ms, []string{"demo-provider", "not-registered"})

			var got []string
			for _, in := range tr.mappedInstances(ms) {
				got = append(got, fmt.Sprintf("%s:%d/%s %s", in.Address, in.Port, in.Protocol, in.Labels["version"]))
				if in.Labels["application"] != "demo-provider" || in.Labels["revision"] == "" {
					t.Errorf("labels %v lack application or revision", in.Labels)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("endpoints %q, want %q", got, tt.want)
			}
		})
	}
}
