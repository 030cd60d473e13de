package harness

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// UnknownFields lists the paths of fields in m (and the messages it holds) that its message
// definitions do not declare. Binary protobuf decoding keeps such fields silently; a proxy built
// from other definitions would drop them, so for a strict decode their presence is an error.
func UnknownFields(m proto.Message) []string {
	var out []string
	walkUnknown(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()), &out)
	return out
}

func walkUnknown(m protoreflect.Message, path string, out *[]string) {
	if len(m.GetUnknown()) > 0 {
		*out = append(*out, fmt.Sprintf("%s (%d bytes)", path, len(m.GetUnknown())))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := range l.Len() {
				walkUnknown(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), out)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walkUnknown(mv.Message(), fmt.Sprintf("%s[%v]", p, k.Interface()), out)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkUnknown(v.Message(), p, out)
		}
		return true
	})
}
