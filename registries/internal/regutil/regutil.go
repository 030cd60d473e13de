// Package regutil holds small helpers the registry plugins share, so that every plugin
// accepts the same protocols, names hosts the same way and quotes untrusted text alike.
package regutil

import (
	"context"
	"strconv"
	"time"

	"github.com/meltemi-mesh/meltemi/plugins/catalog"
)

// Quote renders untrusted text for a message: quoted, at most n bytes, valid UTF-8.
func Quote(s string, n int) string {
	return strconv.Quote(catalog.Clip(s, n))
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
