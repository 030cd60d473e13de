// Package regutil holds small helpers the registry plugins share, so that every plugin
// accepts the same protocols, names hosts the same way and quotes untrusted text alike.
package regutil

import (
	"context"
	"strconv"
	"time"

	"github.com/meltemi-mesh/meltemi/bridge/model"
)

// IsProtocol reports whether p is what bridge/model accepts as an instance protocol: 1 to 32
// lower-case letters, digits, '-' and '_'.
func IsProtocol(p string) bool {
	if p == "" || len(p) > 32 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Quote renders untrusted text for a message: quoted, at most n bytes, valid UTF-8.
func Quote(s string, n int) string {
	return strconv.Quote(model.Clip(s, n))
}

// Sleep waits for d or until ctx ends; it reports whether the full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
