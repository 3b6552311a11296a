package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// connState is the state of a Redis connection that a client can change and
// that the pool key expresses: who it is authenticated as, which database is
// selected and which protocol it speaks.
type connState struct {
	user  string // "" = never authenticated (Redis's implicit default user)
	pass  string
	db    int
	proto int // 2 or 3
}

// cleanState is the state of a new Redis connection.
var cleanState = connState{proto: 2}

// poolKey identifies backend connections that are interchangeable: same
// master, same state. The password enters only as a salted hash, so that a
// connection authenticated as a user serves only sessions that proved that
// user's password to the server themselves.
type poolKey struct {
	addr   string
	user   string
	secret [sha256.Size]byte
	db     int
	proto  int
}

// key computes the pool key of st on the master at addr.
func (st connState) key(addr string, salt []byte) poolKey {
	k := poolKey{addr: addr, user: st.user, db: st.db, proto: st.proto}
	if st.user != "" {
		h := sha256.New()
		h.Write(salt)
		h.Write([]byte(st.user))
		h.Write([]byte{0})
		h.Write([]byte(st.pass))
		h.Sum(k.secret[:0])
	}
	return k
}

// backend is one connection to a Redis master. It is used by one session at
// a time: taken from the pool for a batch, or pinned to a session. Close may
// be called from any goroutine (the server closes connections to an old
// master while sessions use them); everything else belongs to the session
// that holds it.
type backend struct {
	nc     net.Conn
	addr   string
	fr     *Framer
	key    poolKey
	idleAt time.Time // when it went back to the pool
	dead   atomic.Bool
}

// close closes the connection. Safe to call twice and concurrently.
//
// It resets the connection (SO_LINGER 0) rather than closing it gracefully:
// whatever is still in the proxy's send queue for a master that hangs
// (SIGSTOP, a partition) is dropped instead of being delivered, and
// executed, when it wakes up after the proxy has moved on. (What the hung
// server's kernel had already received still runs when it wakes; those
// commands were answered "may have run".)
func (b *backend) close() {
	if b.dead.CompareAndSwap(false, true) {
		nc := b.nc
		if tc, ok := nc.(*tls.Conn); ok {
			// Close the TCP connection under TLS directly: no
			// close_notify alert, which could block (up to 5s) on a hung
			// master and would be dropped by the reset anyway.
			nc = tc.NetConn()
		}
		if tc, ok := nc.(interface{ SetLinger(int) error }); ok {
			tc.SetLinger(0)
		}
		nc.Close()
	}
}

// errHandshake marks a failure to bring a new connection into the session's
// state (wrong password since the session authenticated, unknown db, …).
var errHandshake = errors.New("backend handshake failed")

// dialBackend connects to addr (over TLS when Options.BackendTLS is set)
// and replays st (and the client name, when set) on the new connection, all
// in one round trip. The TLS handshake and the replay share the dial's
// deadline: ctx's, or Options.DialTimeout from now.
func (srv *Server) dialBackend(ctx context.Context, addr string, st connState, name string, key poolKey) (*backend, error) {
	d := &srv.dialer
	deadline, ok := ctx.Deadline()
	if !ok && d.Timeout > 0 {
		deadline = time.Now().Add(d.Timeout)
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial master %s: %w", addr, err)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(15 * time.Second)
	}
	raw = newFastConn(raw) // see rawio.go
	nc := raw
	raw.SetDeadline(deadline)
	if srv.opts.BackendTLS != nil {
		// A reloadable configuration (cmd/sentinel-proxy) verifies the
		// server in VerifyConnection, which needs the name verified.
		tc := tls.Client(raw, cluster.DialTLSConfig(srv.opts.BackendTLS, addr))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			var verr *tls.CertificateVerificationError
			var alert tls.AlertError
			if errors.As(err, &verr) || errors.As(err, &alert) {
				// A certificate or the TLS settings do not match:
				// waiting for the master will not fix it. Say so now
				// rather than hold and end with a timeout.
				return nil, fmt.Errorf("%w on %s: %w", errHandshake, addr, err)
			}
			return nil, fmt.Errorf("tls handshake with master %s: %w", addr, err)
		}
		nc = tc
	}
	b := &backend{nc: nc, addr: addr, fr: NewFramer(nc, 0), key: key}
	if cmds, n := handshake(st, name); n > 0 {
		if _, err := nc.Write(cmds); err != nil {
			b.close()
			return nil, fmt.Errorf("write handshake to %s: %w", addr, err)
		}
		for i := 0; i < n; i++ {
			f, err := b.fr.Next(nil)
			if err != nil {
				b.close()
				return nil, fmt.Errorf("read handshake reply from %s: %w", addr, err)
			}
			if !f.IsReply() {
				i--
				continue
			}
			if f.IsError() {
				b.close()
				return nil, fmt.Errorf("%w on %s: %s", errHandshake, addr, f.ErrorText())
			}
		}
	}
	raw.SetDeadline(time.Time{})
	return b, nil
}

// handshake encodes the commands that bring a new connection into state st,
// and says how many replies they produce.
func handshake(st connState, name string) ([]byte, int) {
	var b []byte
	n := 0
	switch {
	case st.proto == 3 && st.user != "":
		b = appendCommand(b, "HELLO", "3", "AUTH", st.user, st.pass)
		n++
	case st.proto == 3:
		b = appendCommand(b, "HELLO", "3")
		n++
	case st.user != "":
		b = appendCommand(b, "AUTH", st.user, st.pass)
		n++
	}
	if st.db != 0 {
		b = appendCommand(b, "SELECT", strconv.Itoa(st.db))
		n++
	}
	if name != "" {
		b = appendCommand(b, "CLIENT", "SETNAME", name)
		n++
	}
	return b, n
}

// appendCommand appends a RESP multibulk request.
func appendCommand(b []byte, args ...string) []byte {
	b = redcon.AppendArray(b, len(args))
	for _, a := range args {
		b = redcon.AppendBulkString(b, a)
	}
	return b
}

// appendArgs is appendCommand for arguments as bytes (a client's command
// the proxy rewrites).
func appendArgs(b []byte, args [][]byte) []byte {
	b = redcon.AppendArray(b, len(args))
	for _, a := range args {
		b = redcon.AppendBulk(b, a)
	}
	return b
}
