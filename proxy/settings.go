package proxy

import (
	"time"

	"go.uber.org/zap"
)

// Settings are the options Update can change while the server runs, without
// dropping a client. Request limits apply to clients that connect after the
// change; everything else applies to the next command.
type Settings struct {
	// HoldTimeout: see Options.HoldTimeout.
	HoldTimeout time.Duration
	// Limits bound client requests. Zero fields take Redis's defaults.
	Limits RequestLimits
	// Policy says which commands are refused; nil refuses DefaultDenied.
	Policy *Policy
	// Auth, when set, terminates authentication in the proxy; nil passes
	// clients' AUTH through to Redis.
	Auth *Auth
	// MaxClients is the most client connections; more are answered
	// "-ERR max number of clients reached" and closed. Zero means 10000.
	MaxClients int
	// IdleTimeout closes clients that sent nothing for that long; subscribers
	// and blocked clients are not idle. Zero: never.
	IdleTimeout time.Duration
	// HandshakeTimeout is how long a new client has to finish TLS and send
	// its first complete command. Zero: no limit.
	HandshakeTimeout time.Duration
	// OutputLimit is the most bytes a full-duplex client (subscriber,
	// MONITOR, tracking) may leave unread before it is disconnected. Zero:
	// no limit (the proxy then stops reading from the server instead).
	OutputLimit int64
}

func (st *Settings) setDefaults() {
	switch {
	case st.HoldTimeout == 0:
		st.HoldTimeout = 5 * time.Second
	case st.HoldTimeout < 0:
		st.HoldTimeout = 0
	}
	if st.MaxClients <= 0 {
		st.MaxClients = 10000
	}
	st.Limits = st.Limits.withDefaults()
}

// settings returns the current settings.
func (s *Server) settings() *Settings { return s.cur.Load() }

// Update replaces the server's settings; sessions pick them up at their next
// command (request limits: at their next connection).
func (s *Server) Update(st Settings) {
	st.setDefaults()
	s.cur.Store(&st)
	s.log.Info("settings updated", zap.String("group", s.opts.Name),
		zap.Duration("hold_timeout", st.HoldTimeout), zap.Int("max_clients", st.MaxClients),
		zap.Bool("proxy_auth", st.Auth != nil))
}
