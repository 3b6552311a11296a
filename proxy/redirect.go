package proxy

import (
	"bufio"
	"bytes"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// Following a cluster's redirects. A command answered -MOVED, -ASK,
// -TRYAGAIN or -CLUSTERDOWN did not run; its error is not passed on. The
// replies of the commands after it are held back (deferral), the
// redirected command is sent where the redirect says, and its reply goes
// out in its turn between the held-back ones. The others are not sent
// again: they ran where they were, being for other slots or keys.

// maxRedirects bounds how often one command follows -MOVED or -ASK; a
// command still redirected after that (a slot bouncing between nodes
// while the cluster is being reconfigured by hand) is answered that it did
// not run (errNotServed).
const maxRedirects = 5

type redirectKind uint8

const (
	redirMoved redirectKind = iota + 1
	redirAsk
	redirAgain // TRYAGAIN, CLUSTERDOWN: the same command again, shortly
)

// redirect is a command of the run that was redirected.
type redirect struct {
	idx  int // in the run's commands
	kind redirectKind
	addr string // where ASK sends it
	off  int    // its place in the held-back replies
	held []byte // its error, answered if it cannot be followed
}

// deferral holds back the replies after the first redirect of a run.
type deferral struct {
	real *bufio.Writer // the session's writer before
	buf  bytes.Buffer
	w    *bufio.Writer // writes to buf; the session's writer meanwhile
	list []redirect
}

// redirected reports whether frame, the error reply of command idx of the
// run read from node from, is a redirect the session follows. If so it is
// recorded, and from here on the run's replies are held back.
func (s *session) redirected(idx int, frame []byte, from string) bool {
	if s.srv.cl == nil || len(frame) < 3 || frame[0] != '-' {
		return false
	}
	r := redirect{idx: idx}
	if kind, slot, addr, ok := cluster.ParseRedirect(frame); ok {
		addr = cluster.ResolveRedirect(addr, from)
		if kind == cluster.KindMoved {
			r.kind = redirMoved
			s.srv.cl.router.Moved(slot, addr)
		} else {
			r.kind, r.addr = redirAsk, addr
		}
		if addr == "" {
			r.kind = redirAgain // "?": the node does not know the endpoint yet
		}
	} else if bytes.HasPrefix(frame, []byte("-TRYAGAIN")) || bytes.HasPrefix(frame, []byte("-CLUSTERDOWN")) ||
		bytes.HasPrefix(frame, []byte("-UNBLOCKED force unblock")) {
		// UNBLOCKED: a blocked command whose master was demoted under it
		// (CLUSTER FAILOVER); it took nothing and is sent again.
		r.kind = redirAgain
		s.srv.cl.router.RequestRefresh()
	} else {
		return false
	}
	d := s.deferred
	if d == nil {
		d = &deferral{real: s.w}
		d.w = bufio.NewWriterSize(&d.buf, 4<<10)
		s.w, s.rw.client, s.deferred = d.w, d.w, d
	}
	d.w.Flush()
	r.off, r.held = d.buf.Len(), bytes.Clone(frame)
	d.list = append(d.list, r)
	s.srv.m.redirects.Inc()
	return true
}

// followRedirects sends the run's redirected commands where they were
// sent, and writes every held-back reply in its turn.
func (s *session) followRedirects(d *deferral, cmds []Command, infos []cmdInfo, depth int) error {
	if d == nil {
		return nil
	}
	d.w.Flush()
	s.w = d.real
	data := d.buf.Bytes()
	prev := 0
	for k := 0; k < len(d.list); {
		r := d.list[k]
		s.out().Write(data[prev:r.off])
		prev = r.off
		// Redirects with nothing held back between them go together.
		j := k + 1
		for r.kind != redirAsk && j < len(d.list) && d.list[j].off == r.off && d.list[j].kind != redirAsk {
			j++
		}
		var err error
		switch {
		case r.kind == redirAgain && time.Now().Before(s.holdDeadline()):
			s.awaitRouting()
			err = s.clusterForward(pick(cmds, d.list[k:j]), pick(infos, d.list[k:j]), depth)
		case r.kind == redirAgain || depth >= maxRedirects:
			// Held to the deadline, or sent back and forth: the client
			// does not see the redirect, but that the command did not run.
			for _, x := range d.list[k:j] {
				s.srv.m.cmdProxyErr.Inc()
				s.writeError(errNotServed + errorText(x.held) + "); it did not run (sentinel-proxy)")
			}
		case r.kind == redirAsk:
			err = s.runOn(&sourceBox{MasterSource: &fixedNode{r: s.srv.cl.router, addr: r.addr}},
				[]byte(askingCmd), cmds[r.idx:r.idx+1], infos[r.idx:r.idx+1], depth+1)
		default:
			err = s.clusterForward(pick(cmds, d.list[k:j]), pick(infos, d.list[k:j]), depth+1)
		}
		if err != nil {
			return err
		}
		k = j
	}
	s.out().Write(data[prev:])
	return nil
}

const askingCmd = "*1\r\n$6\r\nASKING\r\n"

// errNotServed starts the error of a command still redirected at the hold
// deadline or after maxRedirects; the redirect follows it. MASTERDOWN, as a
// Sentinel group's command held to the deadline: clients retry it.
const errNotServed = "MASTERDOWN the cluster did not serve the command's slot (last answer: "

// pick returns the elements of xs the redirects name, in order.
func pick[T any](xs []T, rs []redirect) []T {
	out := make([]T, len(rs))
	for i, r := range rs {
		out[i] = xs[r.idx]
	}
	return out
}

// awaitRouting waits a moment for the slot map to change (after
// -TRYAGAIN or -CLUSTERDOWN), at most until the batch's hold deadline.
func (s *session) awaitRouting() {
	t := time.NewTimer(min(100*time.Millisecond, time.Until(s.holdDeadline())))
	defer t.Stop()
	select {
	case <-s.srv.cl.router.Changed():
	case <-t.C:
	}
}

// capture runs f with the session's replies going to a buffer instead of
// the client, and returns what they were.
func (s *session) capture(f func() error) ([]byte, error) {
	saved := s.w
	var buf bytes.Buffer
	w := bufio.NewWriterSize(&buf, 4<<10)
	s.w = w
	err := f()
	w.Flush()
	s.w = saved
	return buf.Bytes(), err
}
