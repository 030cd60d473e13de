package protocol

import (
	"slices"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
)

func TestCodecSendsBatchesAsTheyAreAndDelegatesTheRest(t *testing.T) {
	c := Codec{}
	b := encodeAll(services())
	out, err := c.Marshal(b)
	if err != nil || !slices.Equal(out.Materialize(), b.Bytes()) {
		t.Fatalf("batch marshalled to %d bytes, %v", out.Len(), err)
	}
	// A message split over several buffers, as HTTP/2 frames deliver it, decodes whole.
	data := b.Bytes()
	var pieces mem.BufferSlice
	for len(data) > 0 {
		n := min(len(data), 1000)
		pieces = append(pieces, mem.SliceBuffer(data[:n]))
		data = data[n:]
	}
	for _, in := range []mem.BufferSlice{{mem.SliceBuffer(b.Bytes())}, pieces} {
		var got Batch
		if err := c.Unmarshal(in, &got); err != nil || len(got.Events) != b.Events() || got.Events[2].Service.Key != "a" {
			t.Errorf("%d buffers: %d events, %v", len(in), len(got.Events), err)
		}
	}
	req := &registryv1.ConfigureRequest{Registry: "r", Options: map[string]string{"a": "b"}}
	enc, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back registryv1.ConfigureRequest
	if err := c.Unmarshal(enc, &back); err != nil || !proto.Equal(req, &back) {
		t.Errorf("generated message: %v, %v", &back, err)
	}
}
