package traffic

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/traffic/internal/mpproto"
)

// MeshConfig is the part of Istio's MeshConfig (the "mesh" key of the istio ConfigMap) that
// MetaProtocol proxies take their telemetry from, as Aeraki does: the access log and tracing.
type MeshConfig struct {
	// AccessLogFile enables access logs of MetaProtocol requests to this file (/dev/stdout).
	AccessLogFile string `json:"accessLogFile,omitempty"`
	// AccessLogEncoding is TEXT (default) or JSON.
	AccessLogEncoding string `json:"accessLogEncoding,omitempty"`
	// AccessLogFormat replaces the default format: a format string for TEXT, a JSON object of
	// fields for JSON.
	AccessLogFormat string `json:"accessLogFormat,omitempty"`
	// EnableTracing (default true, as in Istio) makes proxies trace MetaProtocol requests.
	EnableTracing *bool          `json:"enableTracing,omitempty"`
	DefaultConfig *ProxyDefaults `json:"defaultConfig,omitempty"`
}

// ProxyDefaults is the part of MeshConfig.defaultConfig read here.
type ProxyDefaults struct {
	Tracing *TracingDefaults `json:"tracing,omitempty"`
}

// TracingDefaults holds the sampling rate in percent (Istio's default 1).
type TracingDefaults struct {
	Sampling *float64 `json:"sampling,omitempty"`
}

// ParseMeshConfig reads the YAML of Istio's MeshConfig; fields not read here are ignored.
func ParseMeshConfig(data string) (*MeshConfig, error) {
	mc := &MeshConfig{}
	if err := yaml.Unmarshal([]byte(data), mc); err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	switch mc.AccessLogEncoding {
	case "", "TEXT", "JSON":
	default:
		return nil, fmt.Errorf("mesh config: accessLogEncoding %q: want TEXT or JSON", mc.AccessLogEncoding)
	}
	if mc.AccessLogEncoding == "JSON" && mc.AccessLogFormat != "" {
		if err := protojson.Unmarshal([]byte(mc.AccessLogFormat), &structpb.Struct{}); err != nil {
			return nil, fmt.Errorf("mesh config: accessLogFormat is not a JSON object: %w", err)
		}
	}
	if s := mc.sampling(); s < 0 || s > 100 {
		return nil, fmt.Errorf("mesh config: defaultConfig.tracing.sampling %v is not within 0-100", s)
	}
	return mc, nil
}

func (mc *MeshConfig) sampling() float64 {
	if mc == nil || mc.DefaultConfig == nil || mc.DefaultConfig.Tracing == nil || mc.DefaultConfig.Tracing.Sampling == nil {
		return 1
	}
	return *mc.DefaultConfig.Tracing.Sampling
}

func (mc *MeshConfig) tracingEnabled() bool {
	return mc == nil || mc.EnableTracing == nil || *mc.EnableTracing
}

// Default formats of MetaProtocol access logs: Envoy's command operators for what a
// MetaProtocol request has (the application protocol travels as a request attribute).
const defaultTextAccessLogFormat = "[%START_TIME%] %REQ(X-META-PROTOCOL-APPLICATION-PROTOCOL)% %RESPONSE_CODE% " +
	"%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" " +
	"%BYTES_RECEIVED% %BYTES_SENT% %DURATION% \"%REQ(X-REQUEST-ID)%\" %UPSTREAM_CLUSTER% " +
	"%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %ROUTE_NAME%\n"

var defaultJSONAccessLogFields = map[string]string{
	"start_time":                        "%START_TIME%",
	"application_protocol":              "%REQ(X-META-PROTOCOL-APPLICATION-PROTOCOL)%",
	"response_code":                     "%RESPONSE_CODE%",
	"response_code_details":             "%RESPONSE_CODE_DETAILS%",
	"connection_termination_details":    "%CONNECTION_TERMINATION_DETAILS%",
	"upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
	"bytes_received":                    "%BYTES_RECEIVED%",
	"bytes_sent":                        "%BYTES_SENT%",
	"duration":                          "%DURATION%",
	"request_id":                        "%REQ(X-REQUEST-ID)%",
	"upstream_cluster":                  "%UPSTREAM_CLUSTER%",
	"upstream_local_address":            "%UPSTREAM_LOCAL_ADDRESS%",
	"downstream_local_address":          "%DOWNSTREAM_LOCAL_ADDRESS%",
	"downstream_remote_address":         "%DOWNSTREAM_REMOTE_ADDRESS%",
	"route_name":                        "%ROUTE_NAME%",
}

const fileAccessLogName = "envoy.access_loggers.file"

// telemetry sets the access log and tracing of a MetaProtocol proxy from the mesh config.
func telemetry(mp *mpproto.MetaProtocolProxy, mc *MeshConfig) error {
	if mc != nil && mc.AccessLogFile != "" {
		fl := &filelogv3.FileAccessLog{Path: mc.AccessLogFile}
		if mc.AccessLogEncoding == "JSON" {
			fields := &structpb.Struct{}
			if mc.AccessLogFormat != "" {
				if err := protojson.Unmarshal([]byte(mc.AccessLogFormat), fields); err != nil {
					return fmt.Errorf("accessLogFormat: %w", err)
				}
			} else {
				fields = jsonFields()
			}
			fl.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: fields}}}
		} else {
			format := defaultTextAccessLogFormat
			if mc.AccessLogFormat != "" {
				format = mc.AccessLogFormat
			}
			fl.AccessLogFormat = &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
					Specifier: &corev3.DataSource_InlineString{InlineString: format}}}}}
		}
		a, err := anypb.New(fl)
		if err != nil {
			return fmt.Errorf("encoding access log: %w", err)
		}
		mp.AccessLog = []*accesslogv3.AccessLog{{Name: fileAccessLogName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}}}
	}
	if mc.tracingEnabled() {
		mp.Tracing = &mpproto.Tracing{
			ClientSampling:  &typev3.Percent{Value: 100},
			RandomSampling:  &typev3.Percent{Value: mc.sampling()},
			OverallSampling: &typev3.Percent{Value: 100},
		}
	}
	return nil
}

func jsonFields() *structpb.Struct {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range defaultJSONAccessLogFields {
		s.Fields[k] = structpb.NewStringValue(v)
	}
	return s
}
