package protocol

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
)

// BenchmarkWatchResponseCodec compares the hand-written codec with the generated code on a
// batch like the stream benchmark's: 500 single-instance upserts with a service label and
// two instance labels. Each side includes the conversion the plugin or host needs: model
// to wire, wire to catalog.
func BenchmarkWatchResponseCodec(b *testing.B) {
	const events = 500
	svcs := make([]catalog.Service, events)
	for i := range svcs {
		svcs[i] = catalog.Service{Key: fmt.Sprintf("svc-%05d", i), Host: fmt.Sprintf("svc-%05d.synthetic.local", i),
			Labels: map[string]string{"app": fmt.Sprintf("svc-%05d", i)},
			Instances: []catalog.Instance{{Address: "10.0.3.232", Port: 20880, Protocol: "dubbo",
				Labels: map[string]string{"version": "1.0.0", "rev": fmt.Sprint(i)}}}}
	}
	generated := func() *registryv1.WatchResponse {
		resp := &registryv1.WatchResponse{}
		for _, s := range svcs {
			resp.Events = append(resp.Events, &registryv1.Event{Kind: &registryv1.Event_Upsert{Upsert: toProto(s)}})
		}
		return resp
	}
	data, err := proto.Marshal(generated())
	if err != nil {
		b.Fatal(err)
	}
	perEvent := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
	}
	b.Run("encode/generated", func(b *testing.B) {
		for b.Loop() {
			if _, err := proto.Marshal(generated()); err != nil {
				b.Fatal(err)
			}
		}
		perEvent(b)
	})
	b.Run("encode/wire", func(b *testing.B) {
		for b.Loop() {
			w := NewWireBatch(len(data))
			for _, s := range svcs {
				if err := w.AppendUpsert(s, len(data)); err != nil {
					b.Fatal(err)
				}
			}
		}
		perEvent(b)
	})
	b.Run("decode/generated", func(b *testing.B) {
		for b.Loop() {
			var resp registryv1.WatchResponse
			if err := proto.Unmarshal(data, &resp); err != nil {
				b.Fatal(err)
			}
			for _, ev := range resp.GetEvents() {
				_ = fromProto(ev.GetUpsert())
			}
		}
		perEvent(b)
	})
	b.Run("decode/wire", func(b *testing.B) {
		var batch Batch
		for b.Loop() {
			if err := batch.Decode(data); err != nil {
				b.Fatal(err)
			}
		}
		perEvent(b)
	})
}
