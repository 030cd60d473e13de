// Package dubbotest writes Dubbo registry data the way Dubbo does, for tests.
package dubbotest

import "strings"

// EncodeURL encodes a provider URL the way Dubbo names provider nodes, like Java's
// URLEncoder.encode(s, "UTF-8"): letters, digits and ".-*_" stay, a space becomes '+', the
// rest is %XX. dubbo.ParseProviderURL undoes it.
func EncodeURL(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".-*_", c) >= 0:
			b.WriteByte(c)
		case c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
		}
	}
	return b.String()
}
