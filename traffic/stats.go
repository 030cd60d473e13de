package traffic

import (
	"encoding/json"
	"fmt"

	kafkav3 "github.com/envoyproxy/go-control-plane/contrib/envoy/extensions/filters/network/kafka_broker/v3"
	zookeeperv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/zookeeper_proxy/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/meltemi-mesh/meltemi/api/istio"
	"github.com/meltemi-mesh/meltemi/api/portname"
)

// Envoy's protocol statistics filters.
const (
	KafkaBrokerFilterName    = "envoy.filters.network.kafka_broker"
	ZooKeeperProxyFilterName = "envoy.filters.network.zookeeper_proxy"
)

// statsFilters adds the EnvoyFilters of a tcp-kafka-… or tcp-zookeeper-… port: Envoy's
// kafka_broker or zookeeper_proxy inserted before the TCP proxy, which keeps forwarding the
// bytes, outbound (on the host's listener) and inbound (for the service's workloads known by
// label), with stat prefixes naming the direction, port and host as Aeraki's do.
func (t *translator) statsFilters(svc *service, port istio.ServicePort, kind portname.Kind) error {
	config := func(statPrefix string) proxyConfig {
		if kind == portname.Kafka {
			return proxyConfig{KafkaBrokerFilterName, &kafkav3.KafkaBroker{StatPrefix: statPrefix}}
		}
		return proxyConfig{ZooKeeperProxyFilterName, &zookeeperv3.ZooKeeperProxy{StatPrefix: statPrefix}}
	}
	if err := t.addNativeFilter(svc, port.Number, "outbound", nil, config(ClusterName(port.Number, "", svc.host)), func(value json.RawMessage) []configPatch {
		return t.outboundPatches(svc, port.Number, nil, insertBeforeTCPProxy, value)
	}); err != nil {
		return err
	}
	sel := inboundSelector(svc.se)
	if len(sel) == 0 {
		return nil
	}
	target := targetPort(port)
	return t.addNativeFilter(svc, port.Number, "inbound", sel, config(inboundStatPrefix(target, svc.host)), func(value json.RawMessage) []configPatch {
		return []configPatch{insertBeforeTCPProxy("SIDECAR_INBOUND", virtualInbound, target, value)}
	})
}

// kubeServiceEntries are Kubernetes Services seen as ServiceEntries (kind Service): the host
// <name>.<namespace>.svc.<domain>, the cluster IP (none for headless Services), the ports
// (target port when numeric) and the selector as workload selector. ExternalName Services
// have no listener of their own and are left out.
func kubeServiceEntries(svcs []*corev1.Service, domain string) []*istio.ServiceEntry {
	var out []*istio.ServiceEntry
	for _, s := range svcs {
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		se := &istio.ServiceEntry{ObjectMeta: s.ObjectMeta}
		se.Kind = "Service"
		se.Spec.Hosts = []string{fmt.Sprintf("%s.%s.svc.%s", s.Name, s.Namespace, domain)}
		if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
			se.Spec.Addresses = []string{ip}
		}
		for _, p := range s.Spec.Ports {
			sp := istio.ServicePort{Number: uint32(p.Port), Name: p.Name, Protocol: string(p.Protocol)}
			if p.TargetPort.IntVal > 0 {
				sp.TargetPort = uint32(p.TargetPort.IntVal)
			}
			se.Spec.Ports = append(se.Spec.Ports, sp)
		}
		if len(s.Spec.Selector) > 0 {
			se.Spec.WorkloadSelector = &istio.WorkloadSelector{Labels: s.Spec.Selector}
		}
		out = append(out, se)
	}
	return out
}
