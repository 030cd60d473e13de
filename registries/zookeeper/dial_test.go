package zookeeper

import (
	"io"
	"log"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

// silentServer accepts connections and never answers, as a ZooKeeper server that is starting
// or failing over may; it counts the connections.
func silentServer(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var accepted atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() { _, _ = io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	return ln.Addr().String(), &accepted
}

// TestHandshakeWithASilentServerEndsInTime: the real client, given a server that accepts and
// never answers its handshake, tries again within the receive timeout (1 s for a 1.5 s session)
// instead of ten times it.
func TestHandshakeWithASilentServerEndsInTime(t *testing.T) {
	const session = 1500 * time.Millisecond
	for _, tc := range []struct {
		name         string
		dialer       zk.Dialer
		wantAttempts int32 // at least, within the wait
	}{
		{"bounded", boundedReadDialer(receiveTimeout(session)), 2},
		{"client default", net.DialTimeout, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, accepted := silentServer(t)
			conn, _, err := zk.Connect([]string{addr}, session, zk.WithDialer(tc.dialer),
				zk.WithLogger(log.New(io.Discard, "", 0)), zk.WithLogInfo(false))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			time.Sleep(receiveTimeout(session) + 1500*time.Millisecond)
			got := accepted.Load()
			if got < tc.wantAttempts {
				t.Errorf("%d connection attempts within %v, want at least %d", got, receiveTimeout(session)+1500*time.Millisecond, tc.wantAttempts)
			}
			if tc.wantAttempts == 1 && got != 1 {
				// The control: without the bound the client still waits on its first handshake,
				// which is what this dialer exists for.
				t.Errorf("without the bound: %d attempts, want 1 (the client's own handshake wait)", got)
			}
		})
	}
}

func TestBoundedReadDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &boundedReadConn{Conn: a, maxWait: 50 * time.Millisecond}
	for _, d := range []time.Time{{}, time.Now().Add(time.Hour)} {
		if err := c.SetReadDeadline(d); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err := c.Read(make([]byte, 1))
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("deadline %v: read error %v, want a timeout", d, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("deadline %v: read waited %v, want about 50ms", d, took)
		}
	}
	// An earlier deadline than the bound stays.
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _ = c.Read(make([]byte, 1))
	if took := time.Since(start); took > 40*time.Millisecond {
		t.Errorf("an earlier deadline was extended: read waited %v", took)
	}
}
