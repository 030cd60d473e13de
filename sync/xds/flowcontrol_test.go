package xds

import (
	"fmt"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestServerAnswersAcksWithoutPings checks that the server writes one response per update and
// nothing more per ACK: with gRPC's bandwidth probing on, every ACK received starts a PING
// round trip, two more writes and reads per stream and update at every proxy.
func TestServerAnswersAcksWithoutPings(t *testing.T) {
	lis := &frameCountingListener{Listener: listen(t)}
	srv := startServerOn(t, nil, lis)
	srv.Update(routes("a", "c0"))
	// Envoy's default windows; fixed windows keep the client from probing, as Envoy does not.
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(16<<20), grpc.WithInitialConnWindowSize(24<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := adsSotw(t, conn)
	c.subscribe("a")
	for round := 1; round <= 10; round++ {
		resp, got := c.recv()
		wantClusters(t, got, "a", fmt.Sprintf("c%d", round-1))
		c.ack(resp, "a")
		srv.Update(routes("a", fmt.Sprintf("c%d", round)))
	}
	if _, got := c.recv(); len(got) != 1 {
		t.Fatalf("last response: %d resources, want 1", len(got))
	}
	if n := lis.pings(); n != 0 {
		t.Errorf("the server sent %d PING frames over 11 responses and 10 ACKs, want 0", n)
	}
}

// frameCountingListener counts the HTTP/2 PING frames (not PING acknowledgements) the server
// writes on its connections.
type frameCountingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*frameCountingConn
}

func (l *frameCountingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &frameCountingConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, fc)
	l.mu.Unlock()
	return fc, nil
}

func (l *frameCountingListener) pings() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		c.mu.Lock()
		n += c.pings
		c.mu.Unlock()
	}
	return n
}

// frameCountingConn parses the frames written to it: a server's side of an HTTP/2 connection
// is frames only (the connection preface is the client's).
type frameCountingConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte // written bytes not yet parsed into whole frames
	pings   int
}

const (
	http2FrameHeaderLen = 9
	http2FramePing      = 0x6
	http2FlagAck        = 0x1
)

func (c *frameCountingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.pending = append(c.pending, p...)
	for len(c.pending) >= http2FrameHeaderLen {
		length := int(c.pending[0])<<16 | int(c.pending[1])<<8 | int(c.pending[2])
		if len(c.pending) < http2FrameHeaderLen+length {
			break
		}
		if c.pending[3] == http2FramePing && c.pending[4]&http2FlagAck == 0 {
			c.pings++
		}
		c.pending = c.pending[http2FrameHeaderLen+length:]
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}
