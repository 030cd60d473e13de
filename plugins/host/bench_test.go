package host

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meltemi-mesh/meltemi/bridge/model"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/sdk"
	"github.com/meltemi-mesh/meltemi/registries/synthetic"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// BenchmarkPluginStart measures what a (re)start costs: spawning the plugin process, the
// go-plugin handshake with AutoMTLS certificates, and a first Describe call.
func BenchmarkPluginStart(b *testing.B) {
	path := BinaryPath(pluginDir, "synthetic")
	var total time.Duration
	for b.Loop() {
		begin := time.Now()
		p, err := startPlugin(path, "", 15*time.Second, quietLog, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.rpc.Describe(context.Background(), &registryv1.DescribeRequest{}); err != nil {
			b.Fatal(err)
		}
		total += time.Since(begin)
		b.StopTimer()
		p.stop(5*time.Second, false)
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "start-ms")
}

// countingSink counts the instances delivered to the sink and signals when it has seen want.
type countingSink struct {
	instances atomic.Int64
	want      int64
	done      chan struct{}
}

func newCountingSink(want int) *countingSink {
	return &countingSink{want: int64(want), done: make(chan struct{})}
}

func (c *countingSink) add(n int) {
	if c.instances.Add(int64(n)) == c.want {
		close(c.done)
	}
}

func (c *countingSink) Replace(_ string, services []model.Service, _ []string) {
	n := 0
	for _, s := range services {
		n += len(s.Instances)
	}
	c.add(n)
}
func (c *countingSink) Upsert(svc model.Service) { c.add(len(svc.Instances)) }
func (c *countingSink) Delete(string, string)    {}
func (c *countingSink) Status(string, Status)    {}
func (c *countingSink) Reject(model.Rejection)   {}

// Stream benchmark sizes: a snapshot of streamServices single-instance services, then
// streamChurn instance changes as fast as the host takes them. Every event is one instance.
const (
	streamServices = 1000
	streamChurn    = 200000
	streamEvents   = streamServices + streamChurn
)

var streamOptions = map[string]string{
	"services": strconv.Itoa(streamServices), "instancesPerService": "1", "churnEvents": strconv.Itoa(streamChurn),
}

// BenchmarkStreamThroughput measures instance events per second from a real plugin process
// through its gRPC stream, decoded in the host (instance-events/s), and the same events of
// the same plugin handed over in process, without process or stream (the ratio is what the
// boundary costs). validated-instance-events/s adds the host's per-item validation on top
// of the stream: everything up to the Sink.
func BenchmarkStreamThroughput(b *testing.B) {
	var stream, inproc, validated, hostCPU, pluginCPU time.Duration
	messages := 0
	for b.Loop() {
		r := streamOnce(b, func(s *countingSink) func(*registryv1.Event) { return countInstances(s) })
		stream, hostCPU, pluginCPU = stream+r.wall, hostCPU+r.hostCPU, pluginCPU+r.pluginCPU
		messages += r.messages
		inproc += inProcessOnce(b)
		validated += streamOnce(b, func(s *countingSink) func(*registryv1.Event) { return benchReceiver(s).handle }).wall
	}
	events := float64(streamEvents * b.N)
	rate := func(d time.Duration) float64 { return events / d.Seconds() }
	b.ReportMetric(rate(stream), "instance-events/s")
	b.ReportMetric(rate(inproc), "inprocess-instance-events/s")
	b.ReportMetric(rate(stream)/rate(inproc), "ratio-vs-inprocess")
	b.ReportMetric(rate(validated), "validated-instance-events/s")
	// CPU per event on each side of the stream: on a busy machine the wall-clock rates
	// above say more about the neighbours than about the stream.
	b.ReportMetric(float64(hostCPU.Microseconds())/events, "host-cpu-µs/event")
	b.ReportMetric(float64(pluginCPU.Microseconds())/events, "plugin-cpu-µs/event")
	b.ReportMetric(events/float64(messages), "events/message")
}

// streamResult is one run through a plugin's stream.
type streamResult struct {
	wall, hostCPU, pluginCPU time.Duration
	messages                 int
}

// processCPU returns the user plus system CPU time of a process so far.
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// utime and stime are the 12th and 13th fields after the parenthesised command name,
	// in clock ticks (100 per second on Linux).
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countInstances counts the instances events carry (a snapshot's services arrive as upserts).
func countInstances(s *countingSink) func(*registryv1.Event) {
	return func(ev *registryv1.Event) {
		if u := ev.GetUpsert(); u != nil {
			s.add(len(u.GetInstances()))
		}
	}
}

func benchReceiver(sink Sink) *receiver {
	return newReceiver("bench", sink, quietLog, (*Metrics)(nil).forRegistry("bench"), nil, func(func(*Status)) {})
}

// streamOnce runs one plugin process through its stream, handing every event to the
// consumer made for a counting sink, and measures the time from the Watch call to the last
// instance counted.
func streamOnce(b *testing.B, consumer func(*countingSink) func(*registryv1.Event)) streamResult {
	p, err := startPlugin(BinaryPath(pluginDir, "synthetic"), "", 15*time.Second, quietLog, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.stop(5*time.Second, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if resp, err := p.rpc.Configure(ctx, &registryv1.ConfigureRequest{Registry: "bench", Options: streamOptions}); err != nil || len(resp.GetErrors()) > 0 {
		b.Fatalf("configure: %v %v", resp, err)
	}
	sink := newCountingSink(streamEvents)
	consume := consumer(sink)
	begin, hostCPU, pluginCPU, messages := time.Now(), selfCPU(), processCPU(p.pid), 0
	stream, err := p.rpc.Watch(ctx, &registryv1.WatchRequest{})
	if err != nil {
		b.Fatal(err)
	}
	for {
		select {
		case <-sink.done:
			return streamResult{time.Since(begin), selfCPU() - hostCPU, processCPU(p.pid) - pluginCPU, messages}
		default:
		}
		resp, err := stream.Recv()
		if err != nil {
			b.Fatalf("after %d instances: %v", sink.instances.Load(), err)
		}
		messages++
		for _, ev := range resp.GetEvents() {
			consume(ev)
		}
	}
}

// inProcessOnce hands the same plugin's events, as the SDK batches them, straight to the
// host side: no process, no stream, no encoding.
func inProcessOnce(b *testing.B) time.Duration {
	srv := sdk.NewServer(synthetic.New())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if resp, err := srv.Configure(ctx, &registryv1.ConfigureRequest{Registry: "bench", Options: streamOptions}); err != nil || len(resp.GetErrors()) > 0 {
		b.Fatalf("configure: %v %v", resp, err)
	}
	sink := newCountingSink(streamEvents)
	st := &directStream{ctx: ctx, consume: countInstances(sink)}
	watchDone := make(chan struct{})
	begin := time.Now()
	go func() { defer close(watchDone); _ = srv.Watch(&registryv1.WatchRequest{}, st) }()
	<-sink.done
	elapsed := time.Since(begin)
	cancel()
	<-watchDone
	return elapsed
}

// directStream hands each batch's events to consume.
type directStream struct {
	grpc.ServerStream
	ctx     context.Context
	consume func(*registryv1.Event)
}

func (d *directStream) Context() context.Context { return d.ctx }

func (d *directStream) Send(resp *registryv1.WatchResponse) error {
	for _, ev := range resp.GetEvents() {
		d.consume(ev)
	}
	return nil
}
