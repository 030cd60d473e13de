package testproxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers each line with the same line, on a loopback port.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through a new connection and returns what came back, or the error.
func roundTrip(addr string) (string, net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", nil, err
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		c.Close()
		return "", nil, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return "", nil, err
	}
	return line, c, nil
}

func TestProxyForwardsBlocksAndCuts(t *testing.T) {
	p := New(t, echoServer(t))
	got, conn, err := roundTrip(p.Addr())
	if err != nil || got != "ping\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}

	p.Block()
	// The open connection is cut...
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection survived Block")
	}
	conn.Close()
	// ...and new ones get no answer.
	if got, c, err := roundTrip(p.Addr()); err == nil {
		c.Close()
		t.Fatalf("a new connection got %q while blocked", got)
	}

	p.Unblock()
	got, conn, err = roundTrip(p.Addr())
	if err != nil || got != "ping\n" {
		t.Fatalf("after Unblock: %q, %v", got, err)
	}
	p.Cut()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection survived Cut")
	}
	conn.Close()
	if got, c, err := roundTrip(p.Addr()); err != nil || got != "ping\n" {
		t.Fatalf("Cut must not refuse new connections: %q, %v", got, err)
	} else {
		c.Close()
	}
}

func TestExpireSessionNeedsASession(t *testing.T) {
	z := NewZooKeeper(t, echoServer(t))
	if z.Session() != 0 {
		t.Fatal("a session before any connection")
	}
	if err := z.ExpireSession(); err == nil {
		t.Fatal("ExpireSession without a session succeeded")
	}
}
