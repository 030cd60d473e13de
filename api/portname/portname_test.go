package portname

import "testing"

func TestParsePortName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    Kind
		app     string
		wantErr bool
	}{
		{"tcp-metaprotocol-dubbo-20880", MetaProtocolKind, "dubbo", false},
		{"tcp-metaprotocol-thrift-hello-server", MetaProtocolKind, "thrift", false},
		{"tcp-metaprotocol-trpc", MetaProtocolKind, "trpc", false},
		{"TCP-MetaProtocol-Dubbo-1", MetaProtocolKind, "dubbo", false},
		{"tcp-metaprotocol", Other, "", true},
		{"tcp-metaprotocol-", Other, "", true},
		{"tcp-metaprotocol--x", Other, "", true},
		{"tcp-metaprotocolx-dubbo", Other, "", false},
		{"tcp-dubbo", Dubbo, "dubbo", false},
		{"tcp-dubbo-20880", Dubbo, "dubbo", false},
		{"tcp-dubbox", Other, "", false},
		{"tcp-thrift-9090", Thrift, "thrift", false},
		{"tcp-redis", Redis, "redis", false},
		{"TCP-Redis-6379", Redis, "redis", false},
		{"tcp-redisx", Other, "", false},
		{"tcp-kafka-9092", Kafka, "kafka", false},
		{"tcp-zookeeper-2181", ZooKeeper, "zookeeper", false},
		{"tcp-zk", Other, "", false},
		{"grpc-tri-50051", Other, "", false},
		{"", Other, "", false},
		{"-", Other, "", false},
	} {
		kind, app, err := Parse(tc.name)
		if kind != tc.kind || app != tc.app || (err != nil) != tc.wantErr {
			t.Errorf("Parse(%q) = %v, %q, %v; want %v, %q, error %v", tc.name, kind, app, err, tc.kind, tc.app, tc.wantErr)
		}
	}
}

func TestNames(t *testing.T) {
	if got := Name(MetaProtocol("dubbo"), 20880); got != "tcp-metaprotocol-dubbo-20880" {
		t.Errorf("Name = %q", got)
	}
	for prefix, want := range map[string]string{"grpc-tri": "GRPC", "http": "HTTP", "http2": "HTTP2", "tcp-metaprotocol-dubbo": "TCP", "tcp": "TCP", "tls": "TLS"} {
		if got := IstioProtocol(prefix); got != want {
			t.Errorf("IstioProtocol(%q) = %s, want %s", prefix, got, want)
		}
	}
}
