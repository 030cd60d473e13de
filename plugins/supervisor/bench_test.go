package supervisor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
	"github.com/meltemi-mesh/meltemi/plugins/protocol"
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

func (c *countingSink) Replace(_ string, services []catalog.Service, _ []string) {
	n := 0
	for _, s := range services {
		n += len(s.Instances)
	}
	c.add(n)
}
func (c *countingSink) Upsert(svc catalog.Service)    { c.add(len(svc.Instances)) }
func (c *countingSink) Delete(string, string)         {}
func (c *countingSink) Status(string, Status)         {}
func (c *countingSink) Reject(catalog.Rejection) bool { return true }

// Stream benchmark sizes: a snapshot of streamServices single-instance services, then
// streamChurn instance changes as fast as the host takes them. Every event is one instance.
const (
	streamServices = 1000
	streamChurn    = 500000
	streamEvents   = streamServices + streamChurn
)

var streamOptions = map[string]string{
	"services": strconv.Itoa(streamServices), "instancesPerService": "1", "churnEvents": strconv.Itoa(streamChurn),
}

// BenchmarkStreamThroughput measures instance events per second from a real plugin process
// through its gRPC stream, decoded in the host as the supervisor decodes them
// (instance-events/s), and the same events made by the same plugin code in this process
// and handed over by a plain function call, without SDK, encoding, process or stream
// (inprocess-instance-events/s; the ratio is what the boundary costs).
// validated-instance-events/s adds the host's per-item validation on top of the stream:
// everything up to the Sink.
//
// The machine may be shared, so the wall-clock rates say as much about the neighbours as
// about the stream. The CPU time both processes spent per event (user+sys: getrusage for
// the host, the plugin's rusage at exit less what it had used before the stream started)
// does not depend on load; events/s-per-core is the rate that CPU cost allows one core.
func BenchmarkStreamThroughput(b *testing.B) {
	var raw, validated streamResult
	var inproc time.Duration
	for b.Loop() {
		raw.add(streamOnce(b, func(s *countingSink) func(*protocol.Event) { return countInstances(s) }))
		inproc += inProcessOnce(b)
		validated.add(streamOnce(b, func(s *countingSink) func(*protocol.Event) { return benchReceiver(s).handle }))
	}
	events := float64(streamEvents * b.N)
	rate := func(d time.Duration) float64 { return events / d.Seconds() }
	perEvent := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / events }
	b.ReportMetric(rate(raw.wall), "instance-events/s")
	b.ReportMetric(rate(inproc), "inprocess-instance-events/s")
	b.ReportMetric(rate(raw.wall)/rate(inproc), "ratio-vs-inprocess")
	b.ReportMetric(perEvent(raw.hostCPU), "host-cpu-µs/event")
	b.ReportMetric(perEvent(raw.pluginCPU), "plugin-cpu-µs/event")
	b.ReportMetric(events/(raw.hostCPU+raw.pluginCPU).Seconds(), "events/s-per-core")
	b.ReportMetric(rate(validated.wall), "validated-instance-events/s")
	b.ReportMetric(perEvent(validated.hostCPU), "validated-host-cpu-µs/event")
	b.ReportMetric(events/(validated.hostCPU+validated.pluginCPU).Seconds(), "validated-events/s-per-core")
	b.ReportMetric(events/float64(raw.messages), "events/message")
}

// streamResult is one run through a plugin's stream, or the sum of several.
type streamResult struct {
	wall, hostCPU, pluginCPU time.Duration
	messages                 int
}

func (r *streamResult) add(o streamResult) {
	r.wall, r.hostCPU, r.pluginCPU, r.messages = r.wall+o.wall, r.hostCPU+o.hostCPU, r.pluginCPU+o.pluginCPU, r.messages+o.messages
}

// threadsCPU returns the CPU time a running process has used so far: the sum of its
// threads' run times, in nanoseconds (/proc/<pid>/task/*/schedstat).
func threadsCPU(b *testing.B, pid int) time.Duration {
	paths, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(paths) == 0 {
		b.Fatalf("reading the plugin's CPU time: %v (%d threads)", err, len(paths))
	}
	var total time.Duration
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(data))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += time.Duration(ns)
		}
	}
	return total
}

// exitedCPU returns the user plus system CPU time of an exited process.
func exitedCPU(b *testing.B, p *proc) time.Duration {
	if p.cmd.ProcessState == nil {
		b.Fatal("plugin process not waited for")
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Fatal("no rusage for the plugin process")
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countInstances counts the instances events carry (a snapshot's services arrive as upserts).
func countInstances(s *countingSink) func(*protocol.Event) {
	return func(ev *protocol.Event) {
		if ev.Kind == protocol.KindUpsert {
			s.add(len(ev.Service.Instances))
		}
	}
}

func benchReceiver(sink Sink) *receiver {
	return newReceiver("bench", sink, quietLog, (*Metrics)(nil).forRegistry("bench"), nil, func(func(*Status)) {})
}

// streamOnce runs one plugin process through its stream, handing every event to the
// consumer made for a counting sink, and measures the time from the Watch call to the last
// instance counted.
func streamOnce(b *testing.B, consumer func(*countingSink) func(*protocol.Event)) streamResult {
	p, err := startPlugin(BinaryPath(pluginDir, "synthetic"), "", 15*time.Second, quietLog, nil)
	if err != nil {
		b.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.stop(5*time.Second, false)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if resp, err := p.rpc.Configure(ctx, &registryv1.ConfigureRequest{Registry: "bench", Options: streamOptions}); err != nil || len(resp.GetErrors()) > 0 {
		b.Fatalf("configure: %v %v", resp, err)
	}
	sink := newCountingSink(streamEvents)
	consume := consumer(sink)
	begin, hostBefore, pluginBefore, messages := time.Now(), selfCPU(), threadsCPU(b, p.pid), 0
	stream, err := p.rpc.Watch(ctx, &registryv1.WatchRequest{})
	if err != nil {
		b.Fatal(err)
	}
	var batch protocol.Batch
	for {
		select {
		case <-sink.done:
			r := streamResult{wall: time.Since(begin), hostCPU: selfCPU() - hostBefore, messages: messages}
			cancel()
			p.stop(5*time.Second, false)
			stopped = true
			// Past the last event the plugin only idles and exits.
			r.pluginCPU = exitedCPU(b, p) - pluginBefore
			return r
		default:
		}
		if err := stream.RecvMsg(&batch); err != nil {
			b.Fatalf("after %d instances: %v", sink.instances.Load(), err)
		}
		messages++
		for i := range batch.Events {
			consume(&batch.Events[i])
		}
	}
}

// inProcessOnce runs the same plugin code in this process, its events handed to a counter
// by plain calls: what the events cost to make, without anything of the plugin boundary.
func inProcessOnce(b *testing.B) time.Duration {
	plugin := &synthetic.Plugin{Log: quietLog}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := plugin.Configure(ctx, sdk.Config{Registry: "bench", Options: streamOptions}); err != nil {
		b.Fatalf("configure: %v", err)
	}
	e := &countingEmitter{sink: newCountingSink(streamEvents)}
	watchDone := make(chan struct{})
	begin := time.Now()
	go func() { defer close(watchDone); _ = plugin.Watch(ctx, e) }()
	<-e.sink.done
	elapsed := time.Since(begin)
	cancel()
	<-watchDone
	return elapsed
}

// countingEmitter counts the instances a plugin emits.
type countingEmitter struct{ sink *countingSink }

func (c *countingEmitter) Snapshot(services []catalog.Service) {
	for _, s := range services {
		c.Set(s)
	}
}
func (c *countingEmitter) Set(svc catalog.Service) bool                { c.sink.add(len(svc.Instances)); return true }
func (c *countingEmitter) Remove(string) bool                          { return false }
func (c *countingEmitter) Sent(string) (s catalog.Service, found bool) { return s, false }
func (c *countingEmitter) SentKeys() []string                          { return nil }
func (c *countingEmitter) Health(bool, string)                         {}
func (c *countingEmitter) Reject(string, string)                       {}
