package proxy

import (
	"bytes"
	"context"
	"strconv"

	"go.uber.org/zap"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// The cluster commands that go to several masters: a command split by
// slot (scatter), the keyspace-wide ones (fanOut), and a pipeline gathered
// per master (byMaster); and what a full-duplex connection refuses.

// scatter runs the sub-commands of a command split by slot and answers
// the merge of their replies.
func (s *session) scatter(p *cluster.Plan, depth int) error {
	cmds := make([]Command, len(p.Subs))
	infos := make([]cmdInfo, len(p.Subs))
	for k, sub := range p.Subs {
		cmds[k] = Command{Raw: sub.Cmd, Args: sub.Args}
		infos[k] = classify(sub.Args)
	}
	out, err := s.capture(func() error { return s.clusterForward(cmds, infos, depth) })
	if err != nil {
		return err
	}
	replies := splitFrames(out, len(cmds))
	if replies == nil {
		s.writeError(errMergeFailed)
		return nil
	}
	merged, err := p.Merge(replies)
	if err != nil {
		s.writeError(errMergeFailed)
		return nil
	}
	s.writeRaw(merged)
	return nil
}

// splitFrames cuts out into n reply frames; nil if it does not hold n.
func splitFrames(out []byte, n int) [][]byte {
	frames := make([][]byte, 0, n)
	for len(out) > 0 {
		l, err := cluster.FrameLen(out)
		if err != nil {
			return nil
		}
		frames = append(frames, out[:l])
		out = out[l:]
	}
	if len(frames) != n {
		return nil
	}
	return frames
}

// isFanOut reports whether args is a keyspace-wide command the proxy sends
// to every master (or, SCAN, to the master its cursor names).
func isFanOut(args [][]byte) bool {
	var buf [16]byte
	name := lower(buf[:0], args[0])
	switch string(name) {
	case "keys", "dbsize", "flushall", "flushdb", "randomkey":
		return true
	case "scan":
		return len(args) >= 2
	case "info":
		return len(args) == 2 && bytes.EqualFold(args[1], []byte("keyspace"))
	case "script":
		return len(args) >= 2 && (bytes.EqualFold(args[1], []byte("load")) || bytes.EqualFold(args[1], []byte("flush")))
	}
	return false
}

// fanOut runs a keyspace-wide command on the masters and answers the
// merge of their replies.
func (s *session) fanOut(cmd Command, info cmdInfo, depth int) error {
	masters := *s.srv.cl.masters.Load()
	if len(masters) == 0 {
		s.writeError(errNoMasters)
		return nil
	}
	var buf [16]byte
	name := string(lower(buf[:0], cmd.Args[0]))
	on := func(addr string, c Command) ([]byte, error) {
		src := &sourceBox{MasterSource: &fixedNode{r: s.srv.cl.router, addr: addr}}
		return s.capture(func() error { return s.runOn(src, nil, []Command{c}, []cmdInfo{info}, depth) })
	}
	if name == "scan" {
		shard, node, err := cluster.DecodeCursor(cmd.Args[1], len(masters))
		if err != nil {
			s.writeError("ERR invalid cursor")
			return nil
		}
		args := append([][]byte{cmd.Args[0], strconv.AppendUint(nil, node, 10)}, cmd.Args[2:]...)
		reply, err := on(masters[shard], Command{Raw: appendArgs(nil, args), Args: args})
		if err != nil {
			return err
		}
		if out, merr := cluster.ScanReply(shard, len(masters), reply); merr == nil {
			s.writeRaw(out)
		} else {
			s.writeError(errMergeFailed)
		}
		return nil
	}
	replies := make([][]byte, len(masters))
	for k, addr := range masters {
		reply, err := on(addr, cmd)
		if err != nil {
			return err
		}
		replies[k] = reply
	}
	var out []byte
	var err error
	switch name {
	case "keys":
		out, err = cluster.MergeKeys(replies)
	case "dbsize":
		out, err = cluster.MergeDBSize(replies)
	case "flushall", "flushdb":
		out, err = cluster.MergeFlush(replies)
	case "randomkey":
		out, err = cluster.MergeRandomKey(replies, max(s.state.proto, 2))
	case "info":
		out, err = cluster.MergeInfoKeyspace(replies)
	default: // SCRIPT LOAD, SCRIPT FLUSH: the same answer from every master
		out = replies[0]
		for _, r := range replies {
			if len(r) > 0 && r[0] == '-' {
				out = r
				break
			}
		}
	}
	if err != nil || out == nil {
		s.writeError(errMergeFailed)
		return nil
	}
	s.writeRaw(out)
	return nil
}

const errDuplexOtherMaster = "ERR in a cluster group, a subscribed or tracking connection only takes keys of its own master's slots; use another connection for this key (sentinel-proxy)"

// clusterRefusal returns the error for a command sent on a cluster
// session's full-duplex connection that it cannot carry: one whose keys
// are served by another master than the connection's, or span slots.
// "" when the connection can carry it.
func (d *duplex) clusterRefusal(args [][]byte) string {
	c := d.s.srv.cl
	t := c.table.Load()
	if t == nil {
		return ""
	}
	p := (*t).Split(args, nil)
	switch {
	case p.Kind == cluster.Scatter || p.Kind == cluster.Refuse:
		return cluster.CrossSlotError
	case isSSubscribe(args) && p.Kind == cluster.Single && p.Slot >= 0:
		// A subscriber subscribing again is most likely one whose slot
		// moved (Redis told it with a sunsubscribe the proxy passed on):
		// read the slot map now rather than send it to the old master.
		ctx, cancel := context.WithTimeout(context.Background(), d.s.srv.opts.DialTimeout)
		err := c.router.Refresh(ctx)
		cancel()
		if err != nil {
			d.s.srv.log.Debug("slot map refresh before SSUBSCRIBE failed", zap.Error(err))
		}
		old := d.followed()
		if addr, ok := c.router.Lookup(p.Slot); !ok || addr == old || d.moveToShard(p.Slot, old) {
			return ""
		}
		return errShardElsewhere
	case p.Kind != cluster.Single || p.Slot < 0:
		return ""
	}
	if addr, ok := c.router.Lookup(p.Slot); ok && addr != d.followed() {
		return errDuplexOtherMaster
	}
	return ""
}

// moveToShard moves the connection to the master of slot, for an
// SSUBSCRIBE whose channel is served there now (its slot migrated: Redis
// sent the subscriber its sunsubscribe). Only when that loses nothing:
// no command awaits a reply, no MONITOR, tracking or transaction, and no
// shard channel still served by the old master (its subscription would not
// survive the move). The connection is closed: the copier moves it as
// after a loss, subscribing again to what was confirmed, and sends the
// SSUBSCRIBE (not written yet) to the new master. It reports whether it
// moved.
func (d *duplex) moveToShard(slot int, old string) bool {
	h := &d.hint
	if h.monitor || h.tracking || d.inMulti {
		return false
	}
	r := d.s.srv.cl.router
	for ch := range h.subs[2] {
		if addr, ok := r.Lookup(int(cluster.Slot([]byte(ch)))); !ok || addr == old {
			return false
		}
	}
	d.mu.Lock()
	if len(d.fifo) > 0 || d.moving || d.b == nil || d.b.addr != old {
		d.mu.Unlock()
		return false
	}
	d.src = &sourceBox{MasterSource: &slotMaster{r: r, slot: slot}}
	b := d.b
	d.mu.Unlock()
	b.close()
	return true
}

// followed returns the master the full-duplex connection is to.
func (d *duplex) followed() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.b != nil {
		return d.b.addr
	}
	src := d.src
	if src == nil {
		src = d.s.srv.source()
	}
	addr, _ := src.Master()
	return addr
}

// clusterReply replaces a redirect answering a command on a cluster
// session's full-duplex connection (the slot moved since the proxy checked)
// with the error the proxy gives for keys of another master: the command
// did not run, and the connection cannot follow it. The slot map learns
// of a -MOVED.
func (d *duplex) clusterReply(frame []byte, from string) []byte {
	if len(frame) < 2 || frame[0] != '-' {
		return frame
	}
	kind, slot, addr, ok := cluster.ParseRedirect(frame)
	if !ok {
		if bytes.HasPrefix(frame, []byte("-TRYAGAIN")) || bytes.HasPrefix(frame, []byte("-CLUSTERDOWN")) {
			// Not retried here: the replies of a full-duplex connection
			// are not held back. The command did not run.
			d.s.srv.cl.router.RequestRefresh()
			return []byte("-" + errDuplexNotServed + errorText(frame) + "); it did not run (sentinel-proxy)\r\n")
		}
		return frame
	}
	if kind == cluster.KindMoved {
		d.s.srv.cl.router.Moved(slot, cluster.ResolveRedirect(addr, from))
	}
	return []byte("-" + errDuplexOtherMaster + "\r\n")
}

// errDuplexNotServed starts the error a subscribed or tracking connection
// of a cluster group gets for -TRYAGAIN or -CLUSTERDOWN, which a client of
// the proxy never sees.
const errDuplexNotServed = "ERR the cluster did not serve this key's slot just now ("

const errShardElsewhere = "ERR this shard channel's slot is served by another master than this connection's (after a slot migration, say); SSUBSCRIBE on a new connection (sentinel-proxy)"

func isSSubscribe(args [][]byte) bool {
	return len(args) > 1 && bytes.EqualFold(args[0], []byte("ssubscribe"))
}
