//go:build ignore

// Command descriptors writes a FileDescriptorSet of the Envoy and well-known protos that the
// local MetaProtocol protos import, taken from the descriptors compiled into go-control-plane,
// so protoc can compile them without Envoy's .proto sources (see gen.sh).
package main

import (
	"flag"
	"log"
	"os"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func main() {
	out := flag.String("o", "", "output file")
	flag.Parse()
	roots := []protoreflect.FileDescriptor{
		accesslogv3.File_envoy_config_accesslog_v3_accesslog_proto,
		corev3.File_envoy_config_core_v3_base_proto,
		corev3.File_envoy_config_core_v3_config_source_proto,
		tracev3.File_envoy_config_trace_v3_http_tracer_proto,
		typev3.File_envoy_type_v3_percent_proto,
		wrapperspb.File_google_protobuf_wrappers_proto,
		routev3.File_envoy_config_route_v3_route_proto,
		routev3.File_envoy_config_route_v3_route_components_proto,
		ratelimitv3.File_envoy_config_ratelimit_v3_rls_proto,
		typev3.File_envoy_type_v3_token_bucket_proto,
		anypb.File_google_protobuf_any_proto,
		durationpb.File_google_protobuf_duration_proto,
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	for _, fd := range roots {
		add(fd)
	}
	b, err := proto.Marshal(set)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		log.Fatal(err)
	}
}
