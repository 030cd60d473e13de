package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// xDS type URLs a sidecar subscribes to.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	ListenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// SidecarOptions describe the workload a Sidecar joins istiod as.
type SidecarOptions struct {
	Name      string // pod name; required
	Namespace string // required; must exist
	Labels    map[string]string
	// IP is the pod's IP; default: one unique to this test process.
	IP string
	// IstioVersion is the proxy version the sidecar announces; default "1.31.0".
	IstioVersion string
	// Metadata adds node metadata, as ISTIO_META_<key> environment variables do for a real
	// proxy (e.g. DNS_CAPTURE: "true").
	Metadata map[string]string
}

// Sidecar is a real xDS client of istiod standing in for an Envoy sidecar: one aggregated
// discovery stream (state of the world) that subscribes to every cluster and listener, then to
// the endpoints of every EDS cluster and the routes every HTTP connection manager names, and
// acknowledges what it accepts. What a real proxy would reject — a resource that does not
// decode or fails Envoy's validation rules — is NACKed and recorded as a problem, as are istiod's
// own reports of EnvoyFilters it could not build or apply (see Problems).
//
// A Pod object with the sidecar's labels and IP backs it: istiod takes a proxy's labels (which
// EnvoyFilter and Sidecar workload selectors match) from its Pod, not from node metadata.
type Sidecar struct {
	Name, Namespace, IP string
	Labels              map[string]string

	t      testing.TB
	env    *Env
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	node   *corev3.Node
	cancel context.CancelFunc

	// outbox holds requests for the sending goroutine. Receiving never waits on sending: istiod
	// stops reading requests while its own send to this stream is blocked, so a client whose
	// receiver waited for its send to go through would deadlock with a large push in flight.
	outbox chan *discoveryv3.DiscoveryRequest

	mu       sync.Mutex
	view     *View
	onUpdate []func(*View)
	changed  chan struct{} // closed, and replaced, on every accepted update
	acked    map[string]int
	nacked   []string
	subs     map[string][]string // EDS and RDS subscriptions by type
	// last holds, by type, the version this sidecar accepted last and the nonce of the
	// latest response: a changed subscription is sent with them, as Envoy does. Without a
	// nonce istiod takes the request for a new stream and sends every resource again.
	last     map[string]ackState
	closed   error
	logStart int64 // size of istiod's log when the sidecar joined
	// filterErrors is istiod's count of EnvoyFilter patches that failed, when the sidecar joined.
	filterErrors float64
}

// View is a sidecar's configuration at one moment: resources by type and name. A view is never
// modified once published (an update makes a new one, sharing the maps it did not change), so
// holders must not modify it either.
type View struct {
	Clusters  map[string]*clusterv3.Cluster
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
	Listeners map[string]*listenerv3.Listener
	Routes    map[string]*routev3.RouteConfiguration
	// Received is when the update that produced this view arrived.
	Received time.Time
}

func cloneMap[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

var sidecarIPs atomic.Uint32

// JoinSidecar creates the sidecar's Pod and connects it to istiod; both go away when the test
// ends. It returns once the first clusters and listeners have arrived.
func (e *Env) JoinSidecar(t testing.TB, kube kubernetes.Interface, opts SidecarOptions) *Sidecar {
	t.Helper()
	e.RequireComponent(t, Istiod)
	if opts.Name == "" || opts.Namespace == "" {
		t.Fatal("JoinSidecar: Name and Namespace are required")
	}
	if opts.IP == "" {
		// 10.200.0.0/16, distinct per sidecar of this process; processes of one run use the same
		// namespace-scoped pod names, so IPs only need to be unique within a process.
		n := sidecarIPs.Add(1) + uint32(os.Getpid()%200)*256
		opts.IP = fmt.Sprintf("10.200.%d.%d", (n/250)%250, n%250+1)
	}
	if opts.IstioVersion == "" {
		opts.IstioVersion = "1.31.0"
	}
	s := &Sidecar{
		Name: opts.Name, Namespace: opts.Namespace, IP: opts.IP, Labels: opts.Labels, t: t, env: e,
		view: &View{Clusters: map[string]*clusterv3.Cluster{}, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
			Listeners: map[string]*listenerv3.Listener{}, Routes: map[string]*routev3.RouteConfiguration{}},
		changed: make(chan struct{}), acked: map[string]int{}, subs: map[string][]string{}, last: map[string]ackState{},
	}
	s.logStart = fileSize(e.IstiodLog)
	s.filterErrors = e.istiodFilterErrors()
	s.createPod(t, kube)

	conn, err := grpc.NewClient(e.IstiodXDSAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatalf("sidecar %s: connecting to istiod: %v", s.id(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	t.Cleanup(func() { cancel(); conn.Close() })
	s.stream, err = discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatalf("sidecar %s: opening the discovery stream: %v", s.id(), err)
	}
	s.node = s.nodeOf(opts)
	s.outbox = make(chan *discoveryv3.DiscoveryRequest, 1024)
	go s.sendLoop(ctx)
	go s.receive()
	// Wildcard subscriptions, as Envoy starts: clusters first, then listeners.
	s.send(&discoveryv3.DiscoveryRequest{TypeUrl: ClusterType})
	s.send(&discoveryv3.DiscoveryRequest{TypeUrl: ListenerType})
	s.WaitFor(60*time.Second, "first clusters and listeners", func(v *View) error {
		if s.accepted(ClusterType) == 0 || s.accepted(ListenerType) == 0 {
			return errors.New("no CDS and LDS response yet")
		}
		return nil
	})
	return s
}

func (s *Sidecar) id() string { return s.Name + "." + s.Namespace }

func (s *Sidecar) nodeOf(opts SidecarOptions) *corev3.Node {
	labels := map[string]any{}
	for k, v := range opts.Labels {
		labels[k] = v
	}
	fields := map[string]any{
		"NAMESPACE":       opts.Namespace,
		"CLUSTER_ID":      "Kubernetes",
		"ISTIO_VERSION":   opts.IstioVersion,
		"LABELS":          labels,
		"INSTANCE_IPS":    opts.IP,
		"SERVICE_ACCOUNT": "default",
		"WORKLOAD_NAME":   opts.Name,
	}
	for k, v := range opts.Metadata {
		fields[k] = v
	}
	md, err := structpb.NewStruct(fields)
	if err != nil {
		s.t.Fatalf("sidecar node metadata: %v", err)
	}
	return &corev3.Node{
		Id:       fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", opts.IP, opts.Name, opts.Namespace, opts.Namespace),
		Cluster:  opts.Name + "." + opts.Namespace,
		Metadata: md,
	}
}

// createPod creates the Pod istiod looks the proxy up by, running and ready at the sidecar's IP
// (no kubelet runs: the status is written directly).
func (s *Sidecar) createPod(t testing.TB, kube kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Labels: s.Labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "meltemi.invalid/none"}}},
	}
	created, err := kube.CoreV1().Pods(s.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("sidecar %s: creating its pod: %v", s.id(), err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		err := kube.CoreV1().Pods(s.Namespace).Delete(context.Background(), s.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Logf("sidecar %s: deleting its pod: %v", s.id(), err)
		}
	})
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: s.IP, PodIPs: []corev1.PodIP{{IP: s.IP}}, HostIP: "127.0.0.1", StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
	if _, err := kube.CoreV1().Pods(s.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("sidecar %s: setting its pod's status: %v", s.id(), err)
	}
}

// send queues a request for the sending goroutine, in order.
func (s *Sidecar) send(req *discoveryv3.DiscoveryRequest) {
	req.Node = s.node
	select {
	case s.outbox <- req:
	default:
		// Only a stream that takes no requests at all fills the queue; Envoy would not block
		// either.
		s.mu.Lock()
		if s.closed == nil {
			s.closed = fmt.Errorf("%d requests queued, istiod takes none", cap(s.outbox))
		}
		s.notifyLocked()
		s.mu.Unlock()
	}
}

func (s *Sidecar) sendLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-s.outbox:
			if err := s.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
				s.mu.Lock()
				if s.closed == nil {
					s.closed = fmt.Errorf("sending %s request: %w", req.TypeUrl, err)
				}
				s.notifyLocked()
				s.mu.Unlock()
			}
		}
	}
}

// ackState is what a sidecar last accepted of one type, and the nonce of the latest response.
type ackState struct{ version, nonce string }

func (s *Sidecar) receive() {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			s.mu.Lock()
			if s.closed == nil {
				s.closed = fmt.Errorf("discovery stream ended: %w", err)
			}
			s.notifyLocked()
			s.mu.Unlock()
			return
		}
		s.handle(resp, time.Now())
	}
}

// handle decodes and checks a response, then ACKs it (updating the view and the EDS and RDS
// subscriptions) or NACKs it, as Envoy would.
func (s *Sidecar) handle(resp *discoveryv3.DiscoveryResponse, at time.Time) {
	typ := resp.GetTypeUrl()
	decoded := map[string]proto.Message{}
	var errs []string
	for _, a := range resp.GetResources() {
		m, name, err := decodeResource(typ, a)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		decoded[name] = m
	}
	s.mu.Lock()
	subs := s.subs[typ]
	prev := s.last[typ]
	if len(errs) > 0 {
		s.last[typ] = ackState{version: prev.version, nonce: resp.GetNonce()}
		for _, e := range errs {
			s.nacked = append(s.nacked, fmt.Sprintf("%s: %s", shortType(typ), e))
		}
		s.mu.Unlock()
		s.send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: subs, ResponseNonce: resp.GetNonce(),
			ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: strings.Join(errs, "; ")}})
		return
	}
	// Only the map of this response's type is new: at 10,000 clusters, copying the whole view
	// on every response made the sidecar, not istiod, the bottleneck.
	next := *s.view
	v := &next
	v.Received = at
	switch typ {
	case ClusterType:
		v.Clusters = typed[*clusterv3.Cluster](decoded)
	case ListenerType:
		v.Listeners = typed[*listenerv3.Listener](decoded)
	case EndpointType:
		// Named subscriptions: a response carries what changed; absent names keep their state
		// unless no longer subscribed.
		v.Endpoints = cloneMap(v.Endpoints)
		for name, m := range decoded {
			v.Endpoints[name] = m.(*endpointv3.ClusterLoadAssignment)
		}
	case RouteType:
		v.Routes = cloneMap(v.Routes)
		for name, m := range decoded {
			v.Routes[name] = m.(*routev3.RouteConfiguration)
		}
	}
	s.acked[typ]++
	s.last[typ] = ackState{version: resp.GetVersionInfo(), nonce: resp.GetNonce()}
	var follow []*discoveryv3.DiscoveryRequest
	follow = append(follow, &discoveryv3.DiscoveryRequest{TypeUrl: typ, ResourceNames: subs, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()})
	switch typ {
	case ClusterType:
		if names := edsClusters(v.Clusters); !slices.Equal(names, s.subs[EndpointType]) {
			s.subs[EndpointType] = names
			v.Endpoints = keep(v.Endpoints, names)
			last := s.last[EndpointType]
			follow = append(follow, &discoveryv3.DiscoveryRequest{TypeUrl: EndpointType, ResourceNames: names, VersionInfo: last.version, ResponseNonce: last.nonce})
		}
	case ListenerType:
		if names := routeNames(v.Listeners); !slices.Equal(names, s.subs[RouteType]) {
			s.subs[RouteType] = names
			v.Routes = keep(v.Routes, names)
			last := s.last[RouteType]
			follow = append(follow, &discoveryv3.DiscoveryRequest{TypeUrl: RouteType, ResourceNames: names, VersionInfo: last.version, ResponseNonce: last.nonce})
		}
	}
	s.view = v
	s.notifyLocked()
	hooks := s.onUpdate
	s.mu.Unlock()
	for _, fn := range hooks {
		fn(v)
	}
	for _, r := range follow {
		s.send(r)
	}
}

func (s *Sidecar) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sidecar) accepted(typ string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[typ]
}

func typed[T proto.Message](m map[string]proto.Message) map[string]T {
	out := make(map[string]T, len(m))
	for k, v := range m {
		out[k] = v.(T)
	}
	return out
}

func keep[V any](m map[string]V, names []string) map[string]V {
	out := make(map[string]V, len(names))
	for _, n := range names {
		if v, ok := m[n]; ok {
			out[n] = v
		}
	}
	return out
}

func shortType(typ string) string { return typ[strings.LastIndex(typ, ".")+1:] }

// decodeResource decodes one resource, rejecting unknown fields and what fails Envoy's
// validation rules (go-control-plane's generated validation), and returns its name.
func decodeResource(typ string, a *anypb.Any) (proto.Message, string, error) {
	if a.GetTypeUrl() != typ {
		return nil, "", fmt.Errorf("resource of type %s in a %s response", a.GetTypeUrl(), typ)
	}
	var m interface {
		proto.Message
		ValidateAll() error
		GetName() string
	}
	switch typ {
	case ClusterType:
		m = &clusterv3.Cluster{}
	case ListenerType:
		m = &listenerv3.Listener{}
	case RouteType:
		m = &routev3.RouteConfiguration{}
	case EndpointType:
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := decodeStrict(a, cla); err != nil {
			return nil, "", err
		}
		return cla, cla.GetClusterName(), nil
	default:
		return nil, "", fmt.Errorf("unexpected type %s", typ)
	}
	if err := decodeStrict(a, m); err != nil {
		return nil, "", err
	}
	if err := m.ValidateAll(); err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", shortType(typ), m.GetName(), err)
	}
	if l, ok := m.(*listenerv3.Listener); ok {
		if err := checkListenerFilters(l); err != nil {
			return nil, "", fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
	}
	return m, m.GetName(), nil
}

func decodeStrict(a *anypb.Any, m proto.Message) error {
	if err := a.UnmarshalTo(m); err != nil {
		return fmt.Errorf("decoding %s: %w", a.GetTypeUrl(), err)
	}
	if u := UnknownFields(m); len(u) > 0 {
		return fmt.Errorf("%s has unknown fields: %v", a.GetTypeUrl(), u)
	}
	return nil
}

// checkListenerFilters decodes and validates the typed config of every network filter whose type
// this process knows (Envoy's own filters); types of Istio's proxy build are skipped.
func checkListenerFilters(l *listenerv3.Listener) error {
	for _, fc := range allFilterChains(l) {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil {
				continue
			}
			cfg, err := tc.UnmarshalNew()
			if err != nil {
				continue // a type of Istio's proxy, unknown here
			}
			if u := UnknownFields(cfg); len(u) > 0 {
				return fmt.Errorf("filter %s: unknown fields %v", f.GetName(), u)
			}
			if v, ok := cfg.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					return fmt.Errorf("filter %s: %w", f.GetName(), err)
				}
			}
		}
	}
	return nil
}

func allFilterChains(l *listenerv3.Listener) []*listenerv3.FilterChain {
	out := slices.Clone(l.GetFilterChains())
	if d := l.GetDefaultFilterChain(); d != nil {
		out = append(out, d)
	}
	return out
}

// edsClusters lists the clusters whose endpoints come from EDS, sorted.
func edsClusters(cs map[string]*clusterv3.Cluster) []string {
	var out []string
	for name, c := range cs {
		if c.GetType() == clusterv3.Cluster_EDS {
			if sn := c.GetEdsClusterConfig().GetServiceName(); sn != "" {
				name = sn
			}
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// routeNames lists the RDS route configurations the listeners' HTTP connection managers name.
func routeNames(ls map[string]*listenerv3.Listener) []string {
	var out []string
	for _, l := range ls {
		for _, fc := range allFilterChains(l) {
			for _, f := range fc.GetFilters() {
				if f.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
					continue
				}
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err == nil && hcm.GetRds().GetRouteConfigName() != "" {
					out = append(out, hcm.GetRds().GetRouteConfigName())
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// OnUpdate calls fn with the new view after every accepted update, from the goroutine that
// receives them (fn must not block); the view must not be modified.
func (s *Sidecar) OnUpdate(fn func(*View)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onUpdate = append(s.onUpdate, fn)
}

// Snapshot returns the current view (which must not be modified).
func (s *Sidecar) Snapshot() *View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// Await waits until cond holds for the sidecar's view, or timeout passes; it returns the view
// that satisfied it (whose Received time is when its last update arrived) or the last error.
func (s *Sidecar) Await(timeout time.Duration, cond func(*View) error) (*View, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		v, changed, closed := s.view, s.changed, s.closed
		s.mu.Unlock()
		err := cond(v)
		if err == nil {
			return v, nil
		}
		if closed != nil {
			return nil, fmt.Errorf("%w (sidecar %s: %v)", err, s.id(), closed)
		}
		select {
		case <-changed:
		case <-deadline.C:
			return nil, err
		}
	}
}

// WaitFor is Await that fails the test, naming what was waited for, with the last error.
func (s *Sidecar) WaitFor(timeout time.Duration, what string, cond func(*View) error) *View {
	s.t.Helper()
	v, err := s.Await(timeout, cond)
	if err != nil {
		s.t.Fatalf("sidecar %s: %s not seen within %v: %v (%s)", s.id(), what, timeout, err, s.state())
	}
	return v
}

// state summarises the stream for a failure message: resources held, subscriptions, and what
// was accepted last, by type.
func (s *Sidecar) state() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.view
	held := map[string]int{ClusterType: len(v.Clusters), EndpointType: len(v.Endpoints), ListenerType: len(v.Listeners), RouteType: len(v.Routes)}
	var parts []string
	for _, typ := range []string{ClusterType, EndpointType, ListenerType, RouteType} {
		part := fmt.Sprintf("%s: %d held, %d accepted, version %q, nonce %q", shortType(typ), held[typ], s.acked[typ], s.last[typ].version, s.last[typ].nonce)
		if subs, ok := s.subs[typ]; ok {
			part += fmt.Sprintf(", %d subscribed", len(subs))
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, "; ")
}

// Problems returns what a real proxy or istiod reported as wrong since the sidecar joined:
// responses the sidecar NACKed, istiod log lines saying it could not build an EnvoyFilter's
// value, and EnvoyFilter patches istiod counted as failed.
func (s *Sidecar) Problems() []string {
	s.mu.Lock()
	out := slices.Clone(s.nacked)
	if s.closed != nil {
		out = append(out, s.closed.Error())
	}
	s.mu.Unlock()
	out = append(out, istiodLogProblems(s.env.IstiodLog, s.logStart)...)
	if n := s.env.istiodFilterErrors(); n > s.filterErrors {
		out = append(out, fmt.Sprintf("istiod counted %v failed EnvoyFilter patch(es) (pilot_envoy_filter_status result=error)", n-s.filterErrors))
	}
	return out
}

// RequireNoProblems fails the test if Problems is not empty.
func (s *Sidecar) RequireNoProblems(t testing.TB) {
	t.Helper()
	if p := s.Problems(); len(p) > 0 {
		t.Fatalf("sidecar %s: problems a real proxy or istiod reported:\n  %s", s.id(), strings.Join(p, "\n  "))
	}
}

// istiodLogProblemMarkers are istiod log messages that mean an object Meltemi wrote was dropped.
var istiodLogProblemMarkers = []string{"failed to build envoy filter value"}

func istiodLogProblems(path string, from int64) []string {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return []string{fmt.Sprintf("reading istiod's log: %v", err)}
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return []string{fmt.Sprintf("reading istiod's log: %v", err)}
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, m := range istiodLogProblemMarkers {
			if strings.Contains(line, m) {
				out = append(out, "istiod: "+line)
			}
		}
	}
	return out
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// IstiodMetrics returns istiod's metrics in the Prometheus text format, as samples by their full
// name with labels (e.g. `pilot_xds_pushes{type="eds"}`).
func (e *Env) IstiodMetrics() (map[string]float64, error) {
	if e.IstiodMonitoring == "" {
		return nil, errors.New("istiod's monitoring address is not known")
	}
	resp, err := http.Get("http://" + e.IstiodMonitoring + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("istiod /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// MetricSum adds up the samples of one metric (all label sets) whose labels contain every
// `k="v"` pair given.
func MetricSum(samples map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for k, v := range samples {
		base, rest, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

func (e *Env) istiodFilterErrors() float64 {
	m, err := e.IstiodMetrics()
	if err != nil {
		return 0
	}
	return MetricSum(m, "pilot_envoy_filter_status", `result="error"`)
}
