package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options configure a Server. The zero value of every optional field has the
// meaning its comment gives.
type Options struct {
	// Name names the master group in logs and errors (e.g. "mymaster").
	Name string
	// Listen is the address Run listens on. Unused by Serve.
	Listen string
	// Source says where the master is. Required, unless Cluster is set.
	Source MasterSource
	// Cluster, when set, makes the group a Redis Cluster: each command
	// goes to the master of its keys' slot (cluster.go).
	Cluster *ClusterOptions
	// DialTimeout bounds connecting to the master and replaying a session's
	// state on the new connection. Zero means 2s.
	DialTimeout time.Duration
	// HoldTimeout is how long a command waits while no master is known
	// (failover in progress) before it is answered with -MASTERDOWN.
	// Zero means 5s; a negative value fails such commands at once.
	HoldTimeout time.Duration
	// MaxIdlePerKey is how many idle backend connections are kept per
	// connection state (user, db, protocol). Zero means 64.
	MaxIdlePerKey int
	// IdleBackendTimeout closes pooled backend connections unused for that
	// long. Zero means 60s.
	IdleBackendTimeout time.Duration
	// MaxBatch is the most pipelined commands forwarded in one write. Zero
	// means 256.
	MaxBatch int
	// SharedConns is how many shared backend connections carry the plain
	// commands of sessions in the same connection state (user, db,
	// protocol). Zero or a negative value turns sharing off: every batch
	// then takes a connection of its own from the pool.
	SharedConns int
	// DrainTimeout is how long Run lets in-flight commands finish after its
	// context is cancelled. Zero means 10s; a negative value closes every
	// connection at once.
	DrainTimeout time.Duration
	// Limits bound client requests. Zero fields take Redis's defaults.
	Limits RequestLimits

	// TLS, when set, serves clients over TLS; the handshake runs on the
	// session's goroutine, within HandshakeTimeout. Certificates reload
	// through its GetConfigForClient or GetCertificate.
	TLS *tls.Config
	// BackendTLS, when set, connects to the data nodes over TLS.
	BackendTLS *tls.Config

	// Policy, Auth, MaxClients, IdleTimeout, HandshakeTimeout and
	// OutputLimit: see Settings. Update changes them (and HoldTimeout and
	// Limits) while the server runs.
	Policy           *Policy
	Auth             *Auth
	MaxClients       int
	IdleTimeout      time.Duration
	HandshakeTimeout time.Duration
	OutputLimit      int64
}

// settings returns the part of o that Update can change.
func (o *Options) settings() Settings {
	return Settings{
		HoldTimeout: o.HoldTimeout, Limits: o.Limits, Policy: o.Policy, Auth: o.Auth,
		MaxClients: o.MaxClients, IdleTimeout: o.IdleTimeout,
		HandshakeTimeout: o.HandshakeTimeout, OutputLimit: o.OutputLimit,
	}
}

func (o *Options) setDefaults() {
	if o.DialTimeout == 0 {
		o.DialTimeout = 2 * time.Second
	}
	switch {
	case o.HoldTimeout == 0:
		o.HoldTimeout = 5 * time.Second
	case o.HoldTimeout < 0:
		o.HoldTimeout = 0
	}
	if o.MaxIdlePerKey == 0 {
		o.MaxIdlePerKey = 64
	}
	if o.IdleBackendTimeout == 0 {
		o.IdleBackendTimeout = 60 * time.Second
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 256
	}
	switch {
	case o.DrainTimeout == 0:
		o.DrainTimeout = 10 * time.Second
	case o.DrainTimeout < 0:
		o.DrainTimeout = 0
	}
}

// Server accepts client connections for one master group and forwards their
// commands to the current master.
type Server struct {
	opts   Options
	log    *zap.Logger
	pool   *pool
	shared *sharedPool // nil when sharing is off
	reqs   sync.Pool   // *shareReq
	bufs   *bufPool
	parker *parker
	dialer net.Dialer
	salt   []byte

	mu       sync.Mutex
	sessions map[*session]struct{}
	wg       sync.WaitGroup // sessions, running or parked
	draining atomic.Bool

	clients  atomic.Int64
	accepted atomic.Uint64

	pinnedN atomic.Int64           // sessions holding a pinned or full-duplex connection
	fenced  atomic.Pointer[string] // the master whose writes may be lost (Fencer); nil or "" for none
	fo      failoverClock
	cur     atomic.Pointer[Settings]
	src     atomic.Pointer[sourceBox]
	authLim *authLimiter
	m       *metrics
	cl      *clusterState // nil unless the group is a Redis Cluster

	onBatch func([]Command) // tests only: runs before each batch a session reads
}

// NewServer checks opts and builds a Server. It does no I/O.
func NewServer(opts Options, log *zap.Logger) (*Server, error) {
	var cl *clusterState
	if opts.Cluster != nil {
		if opts.Cluster.Router == nil || opts.Cluster.FetchCommands == nil {
			return nil, errors.New("proxy: Options.Cluster needs a Router and FetchCommands")
		}
		cl = newClusterState(opts.Cluster)
		opts.Source = &anyMaster{c: cl}
	}
	if opts.Source == nil {
		return nil, errors.New("proxy: Options.Source is required")
	}
	if log == nil {
		log = zap.NewNop()
	}
	st := opts.settings()
	opts.setDefaults()
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("proxy: salt: %w", err)
	}
	pk, err := newParker()
	if err != nil {
		return nil, fmt.Errorf("proxy: parker: %w", err)
	}
	srv := &Server{
		parker:   pk,
		opts:     opts,
		log:      log,
		pool:     newPool(opts.MaxIdlePerKey),
		bufs:     newBufPool(),
		dialer:   net.Dialer{Timeout: opts.DialTimeout},
		salt:     salt,
		sessions: make(map[*session]struct{}),
		authLim:  newAuthLimiter(),
		m:        newMetrics(opts.Name),
		cl:       cl,
	}
	if opts.SharedConns > 0 {
		srv.shared = newSharedPool(opts.SharedConns, srv.pool)
	}
	srv.reqs.New = newShareReq
	st.setDefaults()
	srv.cur.Store(&st)
	srv.src.Store(&sourceBox{MasterSource: opts.Source, swapped: make(chan struct{})})
	return srv, nil
}

// Run listens on Options.Listen and serves until ctx is cancelled.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.opts.Listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts connections on ln until ctx is cancelled, then stops
// accepting, lets in-flight commands finish for up to DrainTimeout, closes
// every client and backend connection and returns nil. It takes ownership of
// ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.log.Info("listening", zap.String("group", s.opts.Name), zap.Stringer("addr", ln.Addr()))
	bg, stopBg := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	bgWG.Add(4)
	go func() { defer bgWG.Done(); s.sweepIdle(bg) }()
	if s.cl != nil {
		bgWG.Add(1)
		go func() { defer bgWG.Done(); s.fetchTable(bg) }()
		go func() { defer bgWG.Done(); s.followCluster(bg) }()
	} else {
		go func() { defer bgWG.Done(); s.followMaster(bg) }()
	}
	go func() { defer bgWG.Done(); s.reapIdle(bg) }()
	go func() { defer bgWG.Done(); s.parker.run(bg, (*session).serve) }()

	acceptDone := make(chan error, 1)
	go func() { acceptDone <- s.acceptLoop(ln) }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-acceptDone:
	}
	ln.Close()
	if err == nil {
		<-acceptDone
	}
	s.drain()
	stopBg()
	bgWG.Wait()
	s.pool.close()
	return err
}

// acceptLoop accepts until ln is closed. Temporary errors (such as running
// out of file descriptors) slow it down but do not stop it.
func (s *Server) acceptLoop(ln net.Listener) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, slowing down", zap.Error(err), zap.Duration("backoff", backoff))
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		if s.clients.Load() >= int64(s.settings().MaxClients) {
			s.refuse(nc)
			continue
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		if s.opts.TLS != nil {
			nc = tls.Server(nc, s.opts.TLS)
		}
		sess := newSession(s, nc)
		s.mu.Lock()
		s.sessions[sess] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.clients.Add(1)
		s.accepted.Add(1)
		go sess.serve()
	}
}

// refuse answers a client over MaxClients as Redis does, and closes it.
func (s *Server) refuse(nc net.Conn) {
	s.m.rejectedMax.Inc()
	if s.opts.TLS == nil {
		nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		nc.Write([]byte("-ERR max number of clients reached\r\n"))
	}
	nc.Close()
}

// sessionEnded forgets a session that has closed.
func (s *Server) sessionEnded(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.clients.Add(-1)
	s.wg.Done()
}

// isTemporary reports accept errors worth retrying (EMFILE, ENFILE, …).
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// drain ends every session after its current batch (a session waiting for
// its client's next command ends at once), for up to DrainTimeout; then it
// closes the rest.
func (s *Server) drain() {
	s.draining.Store(true)
	for _, sess := range s.parker.close() {
		go sess.serve() // answers what it may have sent meanwhile, then ends
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	deadline := time.NewTimer(s.opts.DrainTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for sess := range s.sessions {
			// Interrupt only waits for a next command (and subscribers);
			// a session reading a pipeline in flight finishes it.
			if sess.idleSince.Load() != 0 || sess.streaming.Load() {
				sess.stopReading()
			}
		}
		s.mu.Unlock()
		select {
		case <-done:
			return
		case <-tick.C:
		case <-deadline.C:
			s.mu.Lock()
			for sess := range s.sessions {
				hangUp(sess.conn)
			}
			s.mu.Unlock()
			s.pool.close() // unblocks sessions waiting on a backend
			<-done
			return
		}
	}
}

// followMaster closes backend connections to a master that is no longer
// current, the moment the source names another one.
func (s *Server) followMaster(ctx context.Context) {
	var current string
	for {
		box := s.source()
		addr, changed := box.Master()
		fence := ""
		if f, ok := box.MasterSource.(Fencer); ok {
			fence = f.Fenced()
		}
		if old := s.fenced.Load(); old == nil || *old != fence {
			s.fenced.Store(&fence)
		}
		if addr == "" && current != "" {
			s.fo.lost(time.Now()) // failover started: commands hold
		}
		if addr != "" && addr != current {
			if current != "" {
				s.fo.lost(time.Now()) // no-op when the hold already started it
				s.fo.switched(addr)
			}
			n := s.pool.switchTo(addr)
			if current != "" {
				s.m.failovers.Inc()
				s.log.Info("master changed", zap.String("group", s.opts.Name),
					zap.String("old", current), zap.String("new", addr), zap.Int("closed_backends", n))
			}
			current = addr
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-box.swapped:
		}
	}
}

// sweepIdle ends the wait of sessions idle for parkAfter, so that they park.
func (s *Server) sweepIdle(ctx context.Context) {
	t := time.NewTicker(parkAfter / 2)
	defer t.Stop()
	past := time.Unix(1, 0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cutoff := now.Add(-parkAfter).UnixNano()
			st := s.settings()
			timeouts := st.IdleTimeout > 0 || st.HandshakeTimeout > 0
			idleCut := now.Add(-st.IdleTimeout).UnixNano()
			s.mu.Lock()
			for sess := range s.sessions {
				// The mark and the deadline go together under s.mu, so
				// that a session that stops waiting at that moment can
				// tell the deadline is coming and clear it (serve).
				if since := sess.idleSince.Load(); sess.parkable && since > 0 && since < cutoff &&
					sess.idleSince.CompareAndSwap(since, idleSwept) {
					sess.conn.SetReadDeadline(past)
				}
				if !timeouts || sess.busy.Load() || sess.killed.Load() {
					continue
				}
				switch {
				case st.HandshakeTimeout > 0 && !sess.started.Load() && now.UnixNano()-sess.born > int64(st.HandshakeTimeout):
					sess.kill(reasonHandshake)
				case st.IdleTimeout > 0 && !sess.streaming.Load() && sess.lastActive.Load() < idleCut:
					sess.kill(reasonIdle)
				}
			}
			s.mu.Unlock()
		}
	}
}

// reapIdle closes pooled connections that have been idle too long.
func (s *Server) reapIdle(ctx context.Context) {
	t := time.NewTicker(s.opts.IdleBackendTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.pool.reap(now.Add(-s.opts.IdleBackendTimeout))
			if s.shared != nil {
				s.shared.reap(now.Add(-s.opts.IdleBackendTimeout), now)
			}
		}
	}
}

// errNoMaster is returned when no master became known within HoldTimeout.
var errNoMaster = errors.New("no master")

// awaitMaster returns the current master, waiting up to deadline while none
// is known.
func (s *Server) awaitMaster(box *sourceBox, deadline time.Time) (string, error) {
	addr, changed := box.Master()
	if addr != "" {
		return addr, nil
	}
	s.m.held.Inc()
	start := time.Now()
	defer func() { s.m.holdSeconds.Add(time.Since(start).Seconds()) }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		select {
		case <-box.swapped:
			box = s.source()
			if addr, changed = box.Master(); addr != "" {
				return addr, nil
			}
		case <-changed:
			if addr, changed = box.Master(); addr != "" {
				return addr, nil
			}
		case <-t.C:
			s.m.holdTimeouts.Inc()
			return "", errNoMaster
		}
	}
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Clients  int64  // connected now
	Parked   int    // idle clients held without a goroutine
	Accepted uint64 // since start
	Pinned   int64  // sessions holding a pinned or full-duplex connection
	Pool     PoolStats
}

// Stats returns current counters.
func (s *Server) Stats() Stats {
	st := Stats{Clients: s.clients.Load(), Parked: s.parker.count(), Accepted: s.accepted.Load(), Pinned: s.pinnedN.Load(), Pool: s.pool.stats()}
	if s.shared != nil {
		st.Pool.Shared = s.shared.count()
	}
	return st
}
