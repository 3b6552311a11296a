package proxy

import (
	"errors"
	"time"

	"go.uber.org/zap"
)

// The session's side of a streamed batch on a shared connection: one whose
// replies outgrew shareMaxReply while they came (shared.go). The reader then
// waits for this session, and the batches behind it on the same connection
// wait too, so the client must keep reading.

// shareStallTimeout is how long a client whose batch is streamed on a
// shared connection may leave its replies unread (no byte taken) before it
// is disconnected: other clients' replies wait behind them.
const shareStallTimeout = 10 * time.Second

// errShareStall ends a session whose client stopped reading a streamed batch.
var errShareStall = errors.New("client stopped reading a large reply on a shared connection")

// sharedStream answers a streamed batch: the replies whole in r.out first,
// then what r.stream passes on. A reply up to partLimit (or an error) is
// kept whole and answered as in sharedReplies; a larger one is passed on as
// it comes, unless the batch is being sent again (refused) or is fenced, in
// which case its bytes are dropped and its answer decided at its end.
func (s *session) sharedStream(a *shareAnswer, r *shareReq, cmds []Command, infos []cmdInfo) error {
	defer func() {
		for range r.stream { // the reader never waits for a session that gave up
		}
	}()
	s.noShare = true
	prev := 0
	for i := range r.streamAt {
		a.reply(i, r.out[prev:r.stops[i]], r.out[r.starts[i]:r.stops[i]], r.types[i])
		prev = r.stops[i]
	}
	out := s.out()
	var werr error
	pass := func(p []byte) {
		if werr == nil {
			s.conn.SetWriteDeadline(time.Now().Add(shareStallTimeout))
			_, werr = out.Write(p)
		}
	}
	unit := r.out[prev:] // the reply being read, from its first byte; r.out is the session's now
	base := prev         // where unit starts in the batch's reply bytes
	big := false         // unit outgrew partLimit: passed on (or dropped) as it comes
	passing := false     // … and passed on
	i := r.streamAt
	for m := range r.stream {
		switch {
		case !m.end && big:
			if passing {
				pass(m.p)
			}
		case !m.end:
			unit = append(unit, m.p...)
			if len(unit) > partLimit && unit[0] != '-' && unit[0] != '!' {
				big, passing = true, !a.refused && !a.fenced
				if passing {
					pass(unit)
				}
				unit = unit[:0]
			}
		case big:
			a.reply(i, nil, nil, m.typ)
			i, base, big, passing = i+1, m.stop, false, false
		default:
			a.reply(i, unit, unit[m.start-base:], m.typ)
			i, base, unit = i+1, m.stop, unit[:0]
		}
	}
	if werr == nil {
		s.conn.SetWriteDeadline(time.Now().Add(shareStallTimeout))
		werr = out.Flush()
	}
	s.conn.SetWriteDeadline(time.Time{})
	switch {
	case werr != nil:
		s.srv.m.disconnects.WithLabelValues(reasonOutputLimit).Inc()
		s.srv.log.Info("disconnecting a client that stopped reading a large reply on a shared connection",
			zap.String("group", s.srv.opts.Name), zap.String("client", s.conn.RemoteAddr().String()), zap.Error(werr))
		return errShareStall
	case big && passing:
		// The connection failed inside a reply that was partly passed
		// on: the client's stream cannot be repaired.
		return errors.New("shared connection lost inside a large reply")
	}
	return s.sharedSettle(a, r, cmds, infos)
}
