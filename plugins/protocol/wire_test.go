package protocol

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
	registryv1 "github.com/meltemi-mesh/meltemi/plugins/proto/registry/v1"
)

// The hand-written codec must use registry.proto's numbers and types, and know every field:
// a field added to these messages must be added to wire.go too.
func TestWireNumbersMatchTheProto(t *testing.T) {
	type want struct {
		msg   proto.Message
		field string
		num   protowire.Number
		kind  protoreflect.Kind
	}
	str, u32, msg := protoreflect.StringKind, protoreflect.Uint32Kind, protoreflect.MessageKind
	known := map[protoreflect.FullName]int{}
	messages := []proto.Message{&registryv1.WatchResponse{}, &registryv1.Event{}, &registryv1.Service{}, &registryv1.Instance{},
		&registryv1.ServiceDelete{}, &registryv1.HealthStatus{}, &registryv1.Rejection{}, &registryv1.SnapshotBegin{}, &registryv1.SnapshotEnd{}}
	for _, w := range []want{
		{&registryv1.WatchResponse{}, "events", fieldResponseEvents, msg},
		{&registryv1.Event{}, "snapshot_begin", fieldEventSnapshotBegin, msg},
		{&registryv1.Event{}, "upsert", fieldEventUpsert, msg},
		{&registryv1.Event{}, "delete", fieldEventDelete, msg},
		{&registryv1.Event{}, "snapshot_end", fieldEventSnapshotEnd, msg},
		{&registryv1.Event{}, "health", fieldEventHealth, msg},
		{&registryv1.Event{}, "rejected", fieldEventRejected, msg},
		{&registryv1.Service{}, "key", fieldServiceKey, str},
		{&registryv1.Service{}, "host", fieldServiceHost, str},
		{&registryv1.Service{}, "instances", fieldServiceInstances, msg},
		{&registryv1.Service{}, "labels", fieldServiceLabels, msg},
		{&registryv1.Instance{}, "address", fieldInstanceAddress, str},
		{&registryv1.Instance{}, "port", fieldInstancePort, u32},
		{&registryv1.Instance{}, "protocol", fieldInstanceProtocol, str},
		{&registryv1.Instance{}, "labels", fieldInstanceLabels, msg},
		{&registryv1.Instance{}, "weight", fieldInstanceWeight, u32},
		{&registryv1.Instance{}, "locality", fieldInstanceLocality, str},
		{&registryv1.ServiceDelete{}, "key", fieldDeleteKey, str},
		{&registryv1.HealthStatus{}, "connected", fieldHealthConnected, protoreflect.BoolKind},
		{&registryv1.HealthStatus{}, "message", fieldHealthMessage, str},
		{&registryv1.Rejection{}, "item", fieldRejectionItem, str},
		{&registryv1.Rejection{}, "reason", fieldRejectionReason, str},
		{&registryv1.Rejection{}, "key", fieldRejectionKey, str},
	} {
		md := w.msg.ProtoReflect().Descriptor()
		known[md.FullName()]++
		fd := md.Fields().ByName(protoreflect.Name(w.field))
		if fd == nil {
			t.Errorf("%s has no field %s", md.FullName(), w.field)
			continue
		}
		if fd.Number() != w.num || fd.Kind() != w.kind {
			t.Errorf("%s.%s is %d %v, the codec uses %d %v", md.FullName(), w.field, fd.Number(), fd.Kind(), w.num, w.kind)
		}
		if fd.IsMap() {
			if k, v := fd.MapKey(), fd.MapValue(); k.Number() != fieldEntryKey || k.Kind() != str || v.Number() != fieldEntryValue || v.Kind() != str {
				t.Errorf("%s.%s is not map<string, string>", md.FullName(), w.field)
			}
		}
	}
	for _, m := range messages {
		md := m.ProtoReflect().Descriptor()
		if n := md.Fields().Len(); n != known[md.FullName()] {
			t.Errorf("%s has %d fields, the codec knows %d", md.FullName(), n, known[md.FullName()])
		}
	}
}

// services covers what the encoder must get right: empty fields, several instances, label
// maps on both levels, non-ASCII text, and bodies past 127 bytes (whose length needs more
// than the one byte reserved for it) up to past 16 KiB.
func services() []catalog.Service {
	big := catalog.Service{Key: "big", Host: "big.example"}
	for i := range 700 {
		big.Instances = append(big.Instances, catalog.Instance{
			Address: fmt.Sprintf("10.0.%d.%d", i>>8, i&255), Port: 20880, Protocol: "dubbo",
			Labels: map[string]string{"version": "1.0.0", "rev": fmt.Sprint(i)},
		})
	}
	return []catalog.Service{
		{Key: "a", Host: "a.example"},
		{Key: "b", Host: "b.example", Labels: map[string]string{"app": "b", "empty": ""}, Instances: []catalog.Instance{
			{Address: "10.0.0.1", Port: 20880, Protocol: "dubbo", Labels: map[string]string{"version": "1.0.0"}, Weight: 100, Locality: "eu/west-1/a"},
			{Address: "fd00::1", Port: 65535},
			{},
		}},
		{Key: "ünïcödé ☃", Host: "c.example", Instances: []catalog.Instance{{Address: "10.0.0.2", Port: 1, Labels: map[string]string{"k": strings.Repeat("v", 200)}}}},
		{Key: strings.Repeat("k", 300), Host: "long.example"},
		big,
	}
}

// fromGenerated is what an event decoded by the generated code means.
func fromGenerated(ev *registryv1.Event) Event {
	switch k := ev.GetKind().(type) {
	case *registryv1.Event_SnapshotBegin:
		return Event{Kind: KindSnapshotBegin}
	case *registryv1.Event_SnapshotEnd:
		return Event{Kind: KindSnapshotEnd}
	case *registryv1.Event_Upsert:
		return Event{Kind: KindUpsert, Service: fromProto(k.Upsert)}
	case *registryv1.Event_Delete:
		return Event{Kind: KindDelete, Key: k.Delete.GetKey()}
	case *registryv1.Event_Health:
		return Event{Kind: KindHealth, Connected: k.Health.GetConnected(), Message: k.Health.GetMessage()}
	case *registryv1.Event_Rejected:
		return Event{Kind: KindRejected, Item: k.Rejected.GetItem(), Reason: k.Rejected.GetReason(), Key: k.Rejected.GetKey()}
	}
	return Event{}
}

// sameEvent compares events; empty and nil slices and maps are the same.
func sameEvent(a, b Event) bool {
	return a.Kind == b.Kind && a.Service.Equal(b.Service) && a.Key == b.Key && a.Connected == b.Connected &&
		a.Message == b.Message && a.Item == b.Item && a.Reason == b.Reason && (a.Err == nil) == (b.Err == nil)
}

func encodeAll(svcs []catalog.Service) *WireBatch {
	b := NewWireBatch(0)
	b.AppendHealth(true, "connected")
	b.AppendSnapshotBegin()
	for _, s := range svcs {
		if err := b.AppendUpsert(s, 1<<30); err != nil {
			panic(err)
		}
	}
	b.AppendSnapshotEnd()
	b.AppendDelete("a")
	b.AppendHealth(false, "")
	b.AppendRejection("item ☃", "reason", "")
	b.AppendRejection("huge", "too large", "huge")
	return b
}

func TestEncodedBatchIsWhatTheGeneratedCodeReads(t *testing.T) {
	b := encodeAll(services())
	var resp registryv1.WatchResponse
	if err := proto.Unmarshal(b.Bytes(), &resp); err != nil {
		t.Fatalf("generated code cannot decode the batch: %v", err)
	}
	if b.Events() != len(resp.GetEvents()) {
		t.Fatalf("batch counts %d events, the message has %d", b.Events(), len(resp.GetEvents()))
	}
	want := []Event{{Kind: KindHealth, Connected: true, Message: "connected"}, {Kind: KindSnapshotBegin}}
	for _, s := range services() {
		want = append(want, Event{Kind: KindUpsert, Service: s})
	}
	want = append(want, Event{Kind: KindSnapshotEnd}, Event{Kind: KindDelete, Key: "a"}, Event{Kind: KindHealth},
		Event{Kind: KindRejected, Item: "item ☃", Reason: "reason"}, Event{Kind: KindRejected, Item: "huge", Reason: "too large", Key: "huge"})
	for i, ev := range resp.GetEvents() {
		if got := fromGenerated(ev); !sameEvent(got, want[i]) {
			t.Errorf("event %d: generated code reads %+v, want %+v", i, got, want[i])
		}
	}
	// And the hand decoder reads the same.
	var batch Batch
	if err := batch.Decode(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(batch.Events, want, sameEvent) {
		t.Errorf("decoded %+v", batch.Events)
	}
}

func TestGeneratedEncodingDecodes(t *testing.T) {
	resp := &registryv1.WatchResponse{}
	for _, s := range services() {
		resp.Events = append(resp.Events, &registryv1.Event{Kind: &registryv1.Event_Upsert{Upsert: toProto(s)}})
	}
	resp.Events = append(resp.Events,
		&registryv1.Event{Kind: &registryv1.Event_Delete{Delete: &registryv1.ServiceDelete{Key: "x"}}},
		&registryv1.Event{Kind: &registryv1.Event_Health{Health: &registryv1.HealthStatus{Connected: true, Message: "m"}}},
		&registryv1.Event{Kind: &registryv1.Event_Rejected{Rejected: &registryv1.Rejection{Item: "i", Reason: "r", Key: "k"}}},
		&registryv1.Event{Kind: &registryv1.Event_SnapshotBegin{SnapshotBegin: &registryv1.SnapshotBegin{}}},
		&registryv1.Event{Kind: &registryv1.Event_SnapshotEnd{SnapshotEnd: &registryv1.SnapshotEnd{}}},
		&registryv1.Event{},
	)
	data, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	checkDecode(t, data)
}

// Hand-made messages for what encoders other than ours may send: fields twice, kinds
// replacing each other, unknown fields, wrong wire types, duplicate label keys.
func edgeCases() map[string][]byte {
	tag := func(b []byte, num protowire.Number, typ protowire.Type) []byte {
		return protowire.AppendTag(b, num, typ)
	}
	msg := func(b []byte, num protowire.Number, body []byte) []byte {
		return protowire.AppendBytes(tag(b, num, protowire.BytesType), body)
	}
	str := func(b []byte, num protowire.Number, s string) []byte { return msg(b, num, []byte(s)) }
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(tag(b, num, protowire.VarintType), v)
	}
	entry := func(k, v string) []byte { return str(str(nil, 1, k), 2, v) }
	events := func(evs ...[]byte) []byte {
		var b []byte
		for _, ev := range evs {
			b = msg(b, fieldResponseEvents, ev)
		}
		return b
	}
	svcA := str(str(nil, fieldServiceKey, "a"), fieldServiceHost, "a.example")
	inst := varint(str(nil, fieldInstanceAddress, "10.0.0.1"), fieldInstancePort, 20880)
	return map[string][]byte{
		"upsert twice merges": events(msg(msg(nil, fieldEventUpsert, msg(svcA, fieldServiceInstances, inst)), fieldEventUpsert,
			msg(str(nil, fieldServiceHost, "b.example"), fieldServiceInstances, inst))),
		"later kind wins":      events(msg(msg(nil, fieldEventUpsert, svcA), fieldEventDelete, str(nil, fieldDeleteKey, "a"))),
		"kind back and forth":  events(msg(msg(msg(nil, fieldEventUpsert, svcA), fieldEventDelete, nil), fieldEventUpsert, str(nil, fieldServiceKey, "c"))),
		"duplicate label keys": events(msg(nil, fieldEventUpsert, msg(msg(svcA, fieldServiceLabels, entry("k", "1")), fieldServiceLabels, entry("k", "2")))),
		"entry without value":  events(msg(nil, fieldEventUpsert, msg(svcA, fieldServiceLabels, str(nil, 1, "k")))),
		"entry key twice":      events(msg(nil, fieldEventUpsert, msg(svcA, fieldServiceLabels, str(entry("k", "v"), 1, "k2")))),
		"unknown fields":       events(varint(msg(nil, fieldEventUpsert, varint(str(svcA, 99, "x"), 100, 7)), 42, 1), varint(nil, 7, 1)),
		"wrong wire types":     events(msg(nil, fieldEventUpsert, varint(varint(svcA, fieldServiceKey, 5), fieldServiceInstances, 1)), varint(nil, fieldEventDelete, 3)),
		"port as bytes":        events(msg(nil, fieldEventUpsert, msg(svcA, fieldServiceInstances, str(inst, fieldInstancePort, "x")))),
		"port past 32 bits":    events(msg(nil, fieldEventUpsert, msg(svcA, fieldServiceInstances, varint(nil, fieldInstancePort, 1<<32+80)))),
		"health twice":         events(msg(msg(nil, fieldEventHealth, varint(nil, fieldHealthConnected, 1)), fieldEventHealth, str(nil, fieldHealthMessage, "m"))),
		"fixed and group":      events(msg(protowire.AppendFixed32(tag(nil, 9, protowire.Fixed32Type), 1), fieldEventUpsert, svcA), tag(tag(nil, 8, protowire.StartGroupType), 8, protowire.EndGroupType)),
		"empty event":          events(nil),
		"empty":                nil,
		"invalid utf8 address": events(msg(nil, fieldEventUpsert, msg(svcA, fieldServiceInstances, str(nil, fieldInstanceAddress, "10.0.0.\xff"))), str(nil, fieldEventDelete, "")),
		"truncated event body": events(msg(nil, fieldEventUpsert, svcA[:5]), msg(nil, fieldEventDelete, str(nil, fieldDeleteKey, "b"))),
		"bad field number":     events(msg(nil, fieldEventUpsert, append(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 0)), msg(nil, fieldEventSnapshotEnd, nil)),
		"stray end group":      events(tag(nil, 5, protowire.EndGroupType)),
		"truncated message":    events(msg(nil, fieldEventUpsert, svcA))[:5],
	}
}

func TestDecodeAgreesWithGeneratedCode(t *testing.T) {
	for name, data := range edgeCases() {
		t.Run(name, func(t *testing.T) { checkDecode(t, data) })
	}
}

// A broken event is reported as such, and the events around it are kept.
func TestMalformedEventIsIsolated(t *testing.T) {
	var b Batch
	if err := b.Decode(edgeCases()["invalid utf8 address"]); err != nil {
		t.Fatal(err)
	}
	if len(b.Events) != 2 || b.Events[0].Kind != KindMalformed || b.Events[0].Key != "a" || b.Events[0].Err == nil || b.Events[1].Kind != KindDelete {
		t.Errorf("events %+v", b.Events)
	}
	if err := b.Decode(edgeCases()["truncated event body"]); err != nil || len(b.Events) != 2 || b.Events[0].Kind != KindMalformed || b.Events[1].Key != "b" {
		t.Errorf("events %+v, %v", b.Events, err)
	}
	if err := b.Decode(edgeCases()["truncated message"]); err == nil {
		t.Errorf("a truncated message decoded: %+v", b.Events)
	}
}

func TestUnsendableUpsertIsNotAppended(t *testing.T) {
	b := NewWireBatch(0)
	b.AppendDelete("x")
	before := slices.Clone(b.Bytes())
	var tooLarge *TooLargeError
	if err := b.AppendUpsert(services()[4], 1000); !errors.As(err, &tooLarge) || tooLarge.Size < 1000 {
		t.Errorf("oversized service: %v", err)
	}
	bad := catalog.Service{Key: "k", Host: "h", Instances: []catalog.Instance{{Address: "10.0.0.1", Labels: map[string]string{"k": "\xff"}}}}
	if err := b.AppendUpsert(bad, 1000); err == nil {
		t.Errorf("service with invalid UTF-8 appended")
	}
	if !slices.Equal(b.Bytes(), before) || b.Events() != 1 {
		t.Errorf("batch changed: %d bytes, %d events", b.Len(), b.Events())
	}
	// Other events repair their text instead.
	b.AppendRejection("item\xff", "reason", "")
	var resp registryv1.WatchResponse
	if err := proto.Unmarshal(b.Bytes(), &resp); err != nil || resp.GetEvents()[1].GetRejected().GetItem() != "item\uFFFD" {
		t.Errorf("rejection: %v %v", resp.GetEvents(), err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encodeAll(services()[:3]).Bytes())
	for _, data := range edgeCases() {
		f.Add(data)
	}
	f.Fuzz(checkDecode)
}

// checkDecode fails unless the hand decoder reads data as the generated code does. Where
// the generated code refuses a message, the hand decoder may keep its good events, but
// nothing it returns may carry text that is not UTF-8.
func checkDecode(t *testing.T, data []byte) {
	var got Batch
	err := got.Decode(data)
	var want registryv1.WatchResponse
	if perr := proto.Unmarshal(data, &want); perr != nil {
		if err != nil {
			return
		}
		for _, ev := range got.Events {
			if !textIsValid(ev) {
				t.Fatalf("event with invalid UTF-8: %+v", ev)
			}
		}
		return
	}
	if err != nil {
		t.Fatalf("the generated code decodes the message, the hand decoder fails: %v", err)
	}
	if len(got.Events) != len(want.GetEvents()) {
		t.Fatalf("%d events, the generated code reads %d", len(got.Events), len(want.GetEvents()))
	}
	for i, ev := range want.GetEvents() {
		if w := fromGenerated(ev); !sameEvent(got.Events[i], w) {
			t.Fatalf("event %d is %+v, the generated code reads %+v", i, got.Events[i], w)
		}
	}
}

func textIsValid(ev Event) bool {
	texts := []string{ev.Key, ev.Message, ev.Item, ev.Reason, ev.Service.Key, ev.Service.Host}
	texts = slices.AppendSeq(slices.AppendSeq(texts, maps.Keys(ev.Service.Labels)), maps.Values(ev.Service.Labels))
	for _, in := range ev.Service.Instances {
		texts = append(texts, in.Address, in.Protocol, in.Locality)
		texts = slices.AppendSeq(slices.AppendSeq(texts, maps.Keys(in.Labels)), maps.Values(in.Labels))
	}
	for _, s := range texts {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// toProto and fromProto convert between the model and the generated messages: the reference
// the hand-written codec is compared with.
func toProto(s catalog.Service) *registryv1.Service {
	out := &registryv1.Service{Key: s.Key, Host: s.Host, Labels: s.Labels}
	for _, in := range s.Instances {
		out.Instances = append(out.Instances, &registryv1.Instance{
			Address: in.Address, Port: in.Port, Protocol: in.Protocol,
			Labels: in.Labels, Weight: in.Weight, Locality: in.Locality,
		})
	}
	return out
}

func fromProto(s *registryv1.Service) catalog.Service {
	out := catalog.Service{Key: s.GetKey(), Host: s.GetHost(), Labels: s.GetLabels()}
	for _, in := range s.GetInstances() {
		out.Instances = append(out.Instances, catalog.Instance{
			Address: in.GetAddress(), Port: in.GetPort(), Protocol: in.GetProtocol(),
			Labels: in.GetLabels(), Weight: in.GetWeight(), Locality: in.GetLocality(),
		})
	}
	return out
}
