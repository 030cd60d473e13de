package zookeeper

import (
	"net"
	"time"

	"github.com/go-zookeeper/zk"
)

// boundedReadDialer dials as go-zookeeper does, but no read on the connection may wait longer
// than maxWait. The client gives its handshake ten times its receive timeout (100 s with the
// default 15 s session) and the rest of the handshake response no deadline at all, so a server
// that accepts connections but does not answer them — one restarting, or failing over — held
// the plugin that long before it tried the next server or again. Every other read of the
// client already waits at most its receive timeout, which is what maxWait is.
func boundedReadDialer(maxWait time.Duration) zk.Dialer {
	return func(network, address string, timeout time.Duration) (net.Conn, error) {
		conn, err := net.DialTimeout(network, address, timeout)
		if err != nil {
			return nil, err
		}
		return &boundedReadConn{Conn: conn, maxWait: maxWait}, nil
	}
}

type boundedReadConn struct {
	net.Conn
	maxWait time.Duration
}

// SetReadDeadline sets the earlier of t and maxWait from now; no deadline (zero t) counts as
// late. The client sets a deadline before each read it waits on, so a bound set when it
// clears one never outlives its purpose.
func (c *boundedReadConn) SetReadDeadline(t time.Time) error {
	if limit := time.Now().Add(c.maxWait); t.IsZero() || t.After(limit) {
		t = limit
	}
	return c.Conn.SetReadDeadline(t)
}

// receiveTimeout is go-zookeeper's receive timeout for a session timeout.
func receiveTimeout(sessionTimeout time.Duration) time.Duration { return sessionTimeout * 2 / 3 }
