package protocol

import (
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec delegated to
	"google.golang.org/grpc/mem"
)

// Codec is the gRPC codec on both ends of a plugin connection: the standard proto codec,
// except that a *WireBatch is sent as the bytes it already holds and a *Batch is decoded
// straight into model types (see wire.go). Its name is "proto", so what goes over the wire
// is ordinary protobuf to any peer. Use it with grpc.ForceServerCodecV2 and
// grpc.ForceCodecV2.
type Codec struct{}

var protoCodec = encoding.GetCodecV2("proto")

// Name implements encoding.CodecV2.
func (Codec) Name() string { return "proto" }

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(*WireBatch); ok {
		// The batch is not reused after sending, so gRPC may hold on to its bytes.
		return mem.BufferSlice{mem.SliceBuffer(b.buf)}, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal implements encoding.CodecV2.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*Batch)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	// Decoded strings are copies, so data may be freed as soon as this returns.
	if len(data) == 1 {
		return b.Decode(data[0].ReadOnlyData())
	}
	// A message arrives in several buffers (one per HTTP/2 frame); they are joined in a
	// buffer the batch keeps for the next message, unless it is unusually large.
	n := data.Len()
	buf := b.scratch
	if cap(buf) < n {
		buf = make([]byte, n)
		if n <= maxScratchBytes {
			b.scratch = buf
		}
	}
	buf = buf[:n]
	data.CopyTo(buf)
	return b.Decode(buf)
}

// maxScratchBytes bounds the buffer a Batch keeps between messages.
const maxScratchBytes = 4 << 20
