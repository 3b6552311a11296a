// Package proxy is the data path of sentinel-proxy: it accepts client
// connections for one master group, forwards every command to the master a
// MasterSource names, and streams the replies back.
//
// It owns the client listener, one session per client connection, the pool
// of backend connections keyed by the state they carry (user, db, protocol),
// the RESP request parser and the RESP2/RESP3 reply framer, the command
// table, and what happens to a session when the master changes.
//
// Goroutines: Serve runs an accept loop, a master follower (closes backend
// connections to an old master the moment the source names a new one) and
// an idle-connection reaper. Each client connection has one session
// goroutine that reads a batch of requests, takes a backend connection,
// writes the batch in one write, streams the replies and gives the backend
// connection back. Two short-lived helpers exist: a client watcher while a
// blocking command waits (so a client that hangs up frees its backend
// connection), and, for sessions that turn full duplex (SUBSCRIBE, MONITOR,
// CLIENT TRACKING), a copier that streams server frames to the client,
// matching each to the command it answers. The watcher exits when the
// blocking command is answered or its connection closed; the copier when
// the session leaves full duplex (last unsubscribe, RESET, TRACKING OFF:
// the connection goes back to the session), when the session stops, or
// when a lost connection cannot be replaced. A subscriber's move starts a
// short-lived goroutine per dial attempt so that stopping cancels the dial.
//
// A panic in a session's goroutine or its copier is recovered there: the
// stack is logged once, sentinel_proxy_session_panics_total counts it, and
// only that client is closed.
//
// Socket reads and writes on clients' and backend connections are raw
// system calls (rawio.go): the sockets are non-blocking, so the scheduler
// need not be told a call might block; readiness and deadlines stay Go's
// poller's. A TCP client's session loop runs inside one raw read of its
// socket (serve.go), so that it waits for the next request without first
// trying a read that finds nothing.
//
// The listener is the proxy's own rather than redcon's Server: redcon's
// reader rejects "*0" (Redis ignores it), grows its buffer without bound and
// keeps 8 KiB of buffers per idle connection, which a proxy in front of PHP
// and Tomcat pools cannot afford. Idle clients here hold no buffer at all.
// redcon's RESP encoders write the proxy's own commands and replies.
package proxy
