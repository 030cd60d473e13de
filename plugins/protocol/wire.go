package protocol

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// The Watch stream carries nearly all of the plugin traffic, so its WatchResponse messages
// are encoded and decoded here by hand, straight from and into model types: the generated
// code would build a tree of messages and label maps on each side only to convert it, and
// that cost more than everything else the stream does. The bytes are the ones the generated
// code reads and writes (wire_test.go checks both directions and fuzzes the decoder against
// it); every other RPC uses the generated code. The field numbers below are registry.proto's.
const (
	fieldResponseEvents protowire.Number = 1

	fieldEventSnapshotBegin protowire.Number = 1
	fieldEventUpsert        protowire.Number = 2
	fieldEventDelete        protowire.Number = 3
	fieldEventSnapshotEnd   protowire.Number = 4
	fieldEventHealth        protowire.Number = 5
	fieldEventRejected      protowire.Number = 6

	fieldServiceKey       protowire.Number = 1
	fieldServiceHost      protowire.Number = 2
	fieldServiceInstances protowire.Number = 3
	fieldServiceLabels    protowire.Number = 4

	fieldInstanceAddress  protowire.Number = 1
	fieldInstancePort     protowire.Number = 2
	fieldInstanceProtocol protowire.Number = 3
	fieldInstanceLabels   protowire.Number = 4
	fieldInstanceWeight   protowire.Number = 5
	fieldInstanceLocality protowire.Number = 6

	// A map<string, string> field is, on the wire, a repeated message of these two fields.
	fieldEntryKey   protowire.Number = 1
	fieldEntryValue protowire.Number = 2

	fieldDeleteKey protowire.Number = 1

	fieldHealthConnected protowire.Number = 1
	fieldHealthMessage   protowire.Number = 2

	fieldRejectionItem   protowire.Number = 1
	fieldRejectionReason protowire.Number = 2
	fieldRejectionKey    protowire.Number = 3
)

// WireBatch is a WatchResponse being built in wire form by a plugin. Send it with SendMsg on
// a Watch stream of a server that uses Codec.
type WireBatch struct {
	buf    []byte
	events int
}

// NewWireBatch returns an empty batch with room for about size bytes.
func NewWireBatch(size int) *WireBatch { return &WireBatch{buf: make([]byte, 0, size)} }

// Bytes is the encoded WatchResponse.
func (b *WireBatch) Bytes() []byte { return b.buf }

// Len is the encoded size in bytes.
func (b *WireBatch) Len() int { return len(b.buf) }

// Events is the number of events in the batch.
func (b *WireBatch) Events() int { return b.events }

// AppendSnapshotBegin appends the start of a snapshot.
func (b *WireBatch) AppendSnapshotBegin() { b.appendEvent(fieldEventSnapshotBegin, nil) }

// AppendSnapshotEnd appends the end of a snapshot.
func (b *WireBatch) AppendSnapshotEnd() { b.appendEvent(fieldEventSnapshotEnd, nil) }

// AppendUpsert appends an upsert of svc (its Registry is not sent). It appends nothing and
// returns an error when svc cannot be sent: when the event would be larger than limit bytes
// (a *TooLargeError), or when some of its text is not valid UTF-8, which protobuf strings
// must be.
func (b *WireBatch) AppendUpsert(svc catalog.Service, limit int) error {
	mark, valid := len(b.buf), false
	b.appendEvent(fieldEventUpsert, func(buf []byte) []byte {
		buf, valid = appendService(buf, svc)
		return buf
	})
	var err error
	if size := len(b.buf) - mark; !valid {
		err = errInvalidUTF8
	} else if size > limit {
		err = &TooLargeError{Size: size, Limit: limit}
	}
	if err != nil {
		b.buf = b.buf[:mark]
		b.events--
	}
	return err
}

// TooLargeError is a service too large to be sent.
type TooLargeError struct{ Size, Limit int }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%d bytes encoded, more than the %d a message may carry", e.Size, e.Limit)
}

// AppendDelete appends the deletion of the service with key. Text that is not valid UTF-8
// is repaired, here and in the other events: it cannot name a service the host has.
func (b *WireBatch) AppendDelete(key string) {
	b.appendEvent(fieldEventDelete, func(buf []byte) []byte {
		return appendText(buf, fieldDeleteKey, validText(key))
	})
}

// AppendHealth appends a health report.
func (b *WireBatch) AppendHealth(connected bool, message string) {
	b.appendEvent(fieldEventHealth, func(buf []byte) []byte {
		if connected {
			buf = appendUint(buf, fieldHealthConnected, 1)
		}
		return appendText(buf, fieldHealthMessage, validText(message))
	})
}

// AppendRejection appends a rejected registry item; key is set when a whole service could
// not be sent.
func (b *WireBatch) AppendRejection(item, reason, key string) {
	b.appendEvent(fieldEventRejected, func(buf []byte) []byte {
		buf = appendText(buf, fieldRejectionItem, validText(item))
		buf = appendText(buf, fieldRejectionReason, validText(reason))
		return appendText(buf, fieldRejectionKey, validText(key))
	})
}

// appendEvent appends an event of a kind (an Event field number) whose body fill appends;
// nil is an empty body.
func (b *WireBatch) appendEvent(kind protowire.Number, fill func([]byte) []byte) {
	buf, ev := openMessage(b.buf, fieldResponseEvents)
	buf, body := openMessage(buf, kind)
	if fill != nil {
		buf = fill(buf)
	}
	buf = closeMessage(buf, body)
	b.buf = closeMessage(buf, ev)
	b.events++
}

func validText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// The append functions pass the buffer by value, not through a pointer: that keeps the
// compiler from adding a GC write barrier to every append.

// appendService appends svc's fields and reports whether all its text is valid UTF-8.
func appendService(b []byte, svc catalog.Service) ([]byte, bool) {
	valid := utf8.ValidString(svc.Key) && utf8.ValidString(svc.Host)
	b = appendText(b, fieldServiceKey, svc.Key)
	b = appendText(b, fieldServiceHost, svc.Host)
	for i := range svc.Instances {
		in := &svc.Instances[i]
		var body int
		var labelsValid bool
		b, body = openMessage(b, fieldServiceInstances)
		b = appendText(b, fieldInstanceAddress, in.Address)
		b = appendUint(b, fieldInstancePort, in.Port)
		b = appendText(b, fieldInstanceProtocol, in.Protocol)
		b, labelsValid = appendLabels(b, fieldInstanceLabels, in.Labels)
		b = appendUint(b, fieldInstanceWeight, in.Weight)
		b = appendText(b, fieldInstanceLocality, in.Locality)
		b = closeMessage(b, body)
		valid = valid && labelsValid && utf8.ValidString(in.Address) && utf8.ValidString(in.Protocol) && utf8.ValidString(in.Locality)
	}
	b, labelsValid := appendLabels(b, fieldServiceLabels, svc.Labels)
	return b, valid && labelsValid
}

func appendLabels(b []byte, num protowire.Number, labels map[string]string) ([]byte, bool) {
	valid := true
	for k, v := range labels {
		// Both fields are always written, as the generated code does for map entries.
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(fieldEntryKey)+protowire.SizeBytes(len(k))+
			protowire.SizeTag(fieldEntryValue)+protowire.SizeBytes(len(v))))
		b = protowire.AppendTag(b, fieldEntryKey, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, fieldEntryValue, protowire.BytesType)
		b = protowire.AppendString(b, v)
		valid = valid && utf8.ValidString(k) && utf8.ValidString(v)
	}
	return b, valid
}

// appendText appends a proto3 string field; the empty string is the default and is not
// sent.
func appendText(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendUint(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// openMessage appends the tag of a length-delimited field and one byte for its length, and
// returns where the body starts. Most bodies are shorter than 128 bytes, so the length fits
// that byte and the body is written in place, without computing its size first.
func openMessage(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

// closeMessage writes the length of the body that starts at body, moving the body up when
// the length needs more than the byte reserved for it.
func closeMessage(b []byte, body int) []byte {
	n := len(b) - body
	if n < 0x80 {
		b[body-1] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, make([]byte, extra)...)
	copy(b[body+extra:], b[body:body+n])
	protowire.AppendVarint(b[:body-1], uint64(n))
	return b
}

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds. KindNone is an event with no kind the host knows (e.g. from a newer plugin):
// it is ignored.
const (
	KindNone EventKind = iota
	KindSnapshotBegin
	KindUpsert
	KindDelete
	KindSnapshotEnd
	KindHealth
	KindRejected
	// KindMalformed is an event that could not be read; Err says why.
	KindMalformed
)

// Event is one decoded event of a Watch stream.
type Event struct {
	Kind EventKind
	// Service is the upserted service; its Registry is not set.
	Service catalog.Service
	// Key is the deleted service's (KindDelete), the service the plugin could not send
	// (KindRejected, may be empty), or the service a malformed upsert was about, as far as
	// it could be read (KindMalformed, may be empty).
	Key       string
	Connected bool   // KindHealth
	Message   string // KindHealth
	Item      string // KindRejected
	Reason    string // KindRejected
	Err       error  // KindMalformed
}

// Batch is a WatchResponse decoded straight into model types: pass a *Batch to RecvMsg on a
// Watch stream of a connection that uses Codec. It can be reused for the next message.
type Batch struct {
	Events []Event
	// scratch joins a message that arrived in pieces (see Codec).
	scratch []byte
}

// Decode replaces the batch's events with those encoded in data. An error means the message
// itself is broken; an event that is broken inside is returned as KindMalformed, and the
// events around it are still good (each event is framed by the message).
func (b *Batch) Decode(data []byte) error {
	clear(b.Events) // let the previous message's services go
	b.Events = b.Events[:0]
	for len(data) > 0 {
		num, typ, n := consumeTag(data)
		if n < 0 {
			return fmt.Errorf("decoding watch response: %w", protowire.ParseError(n))
		}
		data = data[n:]
		if num == fieldResponseEvents && typ == protowire.BytesType {
			body, n := protowire.ConsumeBytes(data)
			if n < 0 {
				return fmt.Errorf("decoding watch response: %w", protowire.ParseError(n))
			}
			data = data[n:]
			b.Events = append(b.Events, Event{})
			decodeEvent(body, &b.Events[len(b.Events)-1])
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
			return fmt.Errorf("decoding watch response: %w", protowire.ParseError(n))
		}
		data = data[n:]
	}
	return nil
}

// consumeTag is protowire.ConsumeTag, also refusing field numbers beyond the valid range as
// the generated code does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, errCodeFieldNumber
	}
	return num, typ, n
}

// errCodeFieldNumber is protowire's code for an invalid field number (see protowire.ParseError).
const errCodeFieldNumber = -2

var errInvalidUTF8 = errors.New("text that is not valid UTF-8")

// decodeEvent decodes one Event message into ev. As in the generated code, a later kind
// replaces an earlier one, and a kind seen twice is merged.
func decodeEvent(data []byte, ev *Event) {
	fail := func(err error) {
		key := ev.Key
		if ev.Kind == KindUpsert {
			key = ev.Service.Key
		}
		*ev = Event{Kind: KindMalformed, Key: strings.ToValidUTF8(key, "\uFFFD"), Err: err}
	}
	for len(data) > 0 {
		num, typ, n := consumeTag(data)
		if n < 0 {
			fail(protowire.ParseError(n))
			return
		}
		data = data[n:]
		kind := eventKind(num)
		if kind == KindNone || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
				fail(protowire.ParseError(n))
				return
			}
			data = data[n:]
			continue
		}
		body, n := protowire.ConsumeBytes(data)
		if n < 0 {
			fail(protowire.ParseError(n))
			return
		}
		data = data[n:]
		if ev.Kind != kind {
			*ev = Event{Kind: kind}
		}
		var err error
		switch kind {
		case KindUpsert:
			err = decodeService(body, &ev.Service)
		case KindDelete:
			err = decodeFields(body, func(num protowire.Number, f field) error {
				if num == fieldDeleteKey {
					return f.str(&ev.Key)
				}
				return nil
			})
		case KindHealth:
			err = decodeFields(body, func(num protowire.Number, f field) error {
				switch num {
				case fieldHealthConnected:
					f.bool(&ev.Connected)
				case fieldHealthMessage:
					return f.str(&ev.Message)
				}
				return nil
			})
		case KindRejected:
			err = decodeFields(body, func(num protowire.Number, f field) error {
				switch num {
				case fieldRejectionItem:
					return f.str(&ev.Item)
				case fieldRejectionReason:
					return f.str(&ev.Reason)
				case fieldRejectionKey:
					return f.str(&ev.Key)
				}
				return nil
			})
		default: // snapshot markers: empty messages, but what they hold must be well-formed
			err = decodeFields(body, func(protowire.Number, field) error { return nil })
		}
		if err != nil {
			fail(err)
			return
		}
	}
}

func eventKind(num protowire.Number) EventKind {
	switch num {
	case fieldEventSnapshotBegin:
		return KindSnapshotBegin
	case fieldEventUpsert:
		return KindUpsert
	case fieldEventDelete:
		return KindDelete
	case fieldEventSnapshotEnd:
		return KindSnapshotEnd
	case fieldEventHealth:
		return KindHealth
	case fieldEventRejected:
		return KindRejected
	}
	return KindNone
}

// field is one field's value as decodeFields hands it over. A field of the wrong wire type
// is skipped as unknown, as the generated code does.
type field struct {
	typ protowire.Type
	// raw is the value's bytes: a varint, or a length-delimited field's content.
	raw []byte
	// text holds the same bytes as raw as a string, when the caller has it (see
	// decodeService), so that strings are cut from it instead of each being allocated.
	text string
}

func (f field) str(dst *string) error {
	if f.typ != protowire.BytesType {
		return nil
	}
	s := f.text
	if s == "" && len(f.raw) > 0 {
		s = string(f.raw)
	}
	if !utf8.ValidString(s) {
		return errInvalidUTF8
	}
	*dst = s
	return nil
}

func (f field) uint32(dst *uint32) {
	if f.typ == protowire.VarintType {
		v, _ := protowire.ConsumeVarint(f.raw)
		*dst = uint32(v) // truncated, as the generated code does
	}
}

func (f field) bool(dst *bool) {
	if f.typ == protowire.VarintType {
		v, _ := protowire.ConsumeVarint(f.raw)
		*dst = v != 0
	}
}

// decodeFields calls fn for each field of a message; unknown fields must still be
// well-formed.
func decodeFields(data []byte, fn func(protowire.Number, field) error) error {
	return decodeFieldsIn(data, "", fn)
}

// decodeFieldsIn is decodeFields for a message whose bytes are also at hand as text (or
// empty): a length-delimited field's text is then cut from text.
func decodeFieldsIn(data []byte, text string, fn func(protowire.Number, field) error) error {
	pos := 0
	for pos < len(data) {
		num, typ, n := consumeTag(data[pos:])
		if n < 0 {
			return protowire.ParseError(n)
		}
		pos += n
		f := field{typ: typ}
		switch typ {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(data[pos:])
			if n >= 0 {
				f.raw = data[pos : pos+n]
			}
		case protowire.BytesType:
			var v []byte
			v, n = protowire.ConsumeBytes(data[pos:])
			if n >= 0 {
				f.raw = v
				if text != "" {
					end := pos + n
					f.text = text[end-len(v) : end]
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, data[pos:])
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		pos += n
		if err := fn(num, f); err != nil {
			return err
		}
	}
	return nil
}

// decodeService decodes a Service message into svc, merging with what svc holds (a message
// field seen twice is merged). All its strings are cut from one copy of the message's bytes:
// one allocation instead of one per string, and what it keeps alive is just this service.
func decodeService(data []byte, svc *catalog.Service) error {
	text := string(data)
	if n := countField(data, fieldServiceInstances); n > 0 {
		svc.Instances = growInstances(svc.Instances, n)
	}
	return decodeFieldsIn(data, text, func(num protowire.Number, f field) error {
		switch num {
		case fieldServiceKey:
			return f.str(&svc.Key)
		case fieldServiceHost:
			return f.str(&svc.Host)
		case fieldServiceInstances:
			if f.typ != protowire.BytesType {
				return nil
			}
			svc.Instances = append(svc.Instances, catalog.Instance{})
			return decodeInstance(f.raw, f.text, &svc.Instances[len(svc.Instances)-1])
		case fieldServiceLabels:
			return decodeEntry(f, &svc.Labels)
		}
		return nil
	})
}

func decodeInstance(data []byte, text string, in *catalog.Instance) error {
	return decodeFieldsIn(data, text, func(num protowire.Number, f field) error {
		switch num {
		case fieldInstanceAddress:
			return f.str(&in.Address)
		case fieldInstancePort:
			f.uint32(&in.Port)
		case fieldInstanceProtocol:
			return f.str(&in.Protocol)
		case fieldInstanceLabels:
			return decodeEntry(f, &in.Labels)
		case fieldInstanceWeight:
			f.uint32(&in.Weight)
		case fieldInstanceLocality:
			return f.str(&in.Locality)
		}
		return nil
	})
}

// decodeEntry adds one map entry to labels; a key seen again replaces the earlier value.
func decodeEntry(f field, labels *map[string]string) error {
	if f.typ != protowire.BytesType {
		return nil
	}
	var k, v string
	err := decodeFieldsIn(f.raw, f.text, func(num protowire.Number, f field) error {
		switch num {
		case fieldEntryKey:
			return f.str(&k)
		case fieldEntryValue:
			return f.str(&v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if *labels == nil {
		*labels = make(map[string]string, 2)
	}
	(*labels)[k] = v
	return nil
}

// countField counts the occurrences of a length-delimited field, to size a slice once.
// Broken input stops the count; decoding reports it.
func countField(data []byte, want protowire.Number) int {
	count := 0
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			break
		}
		data = data[n:]
		if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
			break
		}
		data = data[n:]
		if num == want && typ == protowire.BytesType {
			count++
		}
	}
	return count
}

func growInstances(s []catalog.Instance, n int) []catalog.Instance {
	if cap(s)-len(s) >= n {
		return s
	}
	out := make([]catalog.Instance, len(s), len(s)+n)
	copy(out, s)
	return out
}
