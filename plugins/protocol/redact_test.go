package protocol

import "testing"

func TestRedact(t *testing.T) {
	r := NewRedactor(map[string]string{"password": "p@ss w\"rd", "token": "abc", "short": "xy", "long": "abcdef"})
	for _, tc := range []struct{ in, want string }{
		{"nothing secret", "nothing secret"},
		{"pw p@ss w\"rd end", "pw [redacted] end"},
		{`quoted "p@ss w\"rd"`, `quoted "[redacted]"`},
		{"url p%40ss+w%22rd and path p@ss%20w%22rd", "url [redacted] and path [redacted]"},
		{"abcdef contains abc", "[redacted] contains [redacted]"},
		{"xy is too short to redact", "xy is too short to redact"},
	} {
		if got := r.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var none *Redactor
	if none.Redact("abc") != "abc" || !none.Empty() || !NewRedactor(nil).Empty() || r.Empty() {
		t.Errorf("empty redactors")
	}
}
