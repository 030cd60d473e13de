package testproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// ZooKeeper is a Proxy in front of one ZooKeeper server that also notes the session its
// client holds, so a test can expire it.
type ZooKeeper struct {
	*Proxy

	mu        sync.Mutex
	sessionID int64
	passwd    []byte
}

// NewZooKeeper starts a proxy to the first server of target ("h1:2181,h2:2181").
func NewZooKeeper(t testing.TB, target string) *ZooKeeper {
	t.Helper()
	z := &ZooKeeper{}
	z.Proxy = start(t, strings.Split(target, ",")[0], z.connectResponse)
	return z
}

// connectResponse reads the server's answer to a connect request, the first packet of every
// connection, and notes the session it grants.
func (z *ZooKeeper) connectResponse(server io.Reader) ([]byte, error) {
	body, err := readPacket(server)
	if err != nil {
		return nil, err
	}
	// protocolVersion int32, timeout int32, sessionID int64, passwd (int32 length + bytes)
	if len(body) >= 20 {
		sid := int64(binary.BigEndian.Uint64(body[8:16]))
		pl := int(binary.BigEndian.Uint32(body[16:20]))
		if sid != 0 && pl >= 0 && 20+pl <= len(body) {
			z.mu.Lock()
			z.sessionID, z.passwd = sid, append([]byte(nil), body[20:20+pl]...)
			z.mu.Unlock()
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...), nil
}

// Session is the id of the last session the server granted through the proxy; 0 before.
func (z *ZooKeeper) Session() int64 {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.sessionID
}

// ExpireSession ends the session the proxied client holds, the way ZooKeeper's own test
// suites do: a second client attaches to the same session (the server then drops the first
// client's connection) and closes it. The first client's next reconnect finds it expired.
func (z *ZooKeeper) ExpireSession() error {
	z.mu.Lock()
	sid, passwd := z.sessionID, z.passwd
	z.mu.Unlock()
	if sid == 0 {
		return errors.New("no session seen yet")
	}
	c, err := net.DialTimeout("tcp", z.Target(), 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))

	// ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd.
	req := binary.BigEndian.AppendUint32(nil, 0)
	req = binary.BigEndian.AppendUint64(req, 0)
	req = binary.BigEndian.AppendUint32(req, 30000)
	req = binary.BigEndian.AppendUint64(req, uint64(sid))
	req = binary.BigEndian.AppendUint32(req, uint32(len(passwd)))
	req = append(req, passwd...)
	if err := writePacket(c, req); err != nil {
		return err
	}
	resp, err := readPacket(c)
	if err != nil {
		return fmt.Errorf("connect response: %w", err)
	}
	if len(resp) < 16 || binary.BigEndian.Uint64(resp[8:16]) == 0 {
		return errors.New("session already expired")
	}
	// closeSession: RequestHeader{xid, type=-11}.
	closeReq := binary.BigEndian.AppendUint32(nil, 1)
	closeReq = binary.BigEndian.AppendUint32(closeReq, uint32(0xFFFFFFF5))
	if err := writePacket(c, closeReq); err != nil {
		return err
	}
	if _, err := readPacket(c); err != nil {
		return fmt.Errorf("close response: %w", err)
	}
	return nil
}

func writePacket(w io.Writer, body []byte) error {
	_, err := w.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...))
	return err
}

// readPacket reads one length-prefixed ZooKeeper packet; connect responses are small, so a
// length over 64 KiB means the stream is not ZooKeeper's.
func readPacket(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > 1<<16 {
		return nil, fmt.Errorf("packet of %d bytes", n)
	}
	body := make([]byte, n)
	_, err := io.ReadFull(r, body)
	return body, err
}
