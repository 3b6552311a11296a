package proxy

import (
	"errors"
	"slices"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// A RESP2 pipeline whose commands alternate between masters goes as one
// run per master, and its replies are gathered and passed on in the
// client's order (byMaster). On shared connections the runs are all
// written before any reply is awaited, so that the masters work on them
// together.

// masterGroup is the commands of a pipeline for one master.
type masterGroup struct {
	addr  string
	slot  int
	idx   []int // the commands' places in the pipeline
	cmds  []Command
	infos []cmdInfo

	// Set when the group went on a shared connection ahead of its turn
	// (submitGroups).
	src *sourceBox
	c   *sharedConn
	r   *shareReq
}

// byMaster runs a pipeline whose commands for each master are not
// consecutive as one run per master rather than one per change of master
// (a pipeline of random keys over 3 masters would otherwise make about
// two runs in three commands): each master's replies are gathered, then
// passed on in the client's order. Commands for one slot keep their order;
// those for different masters do not depend on each other. Only plain
// commands with at most one slot, in RESP2 (one frame per reply), outside
// a transaction; it reports false, having done nothing, for any other
// pipeline.
func (s *session) byMaster(t cluster.Table, cmds []Command, infos []cmdInfo, depth int) (bool, error) {
	if s.state.proto != 2 || s.tx != txNone || s.heldMulti || s.pinned != nil {
		return false, nil
	}
	router := s.srv.cl.router
	// First the masters, without building anything: most pipelines go
	// to one master, or to each master in one run.
	addrs := s.addrs[:0]
	var masters [8]string
	nm, runs, prev := 0, 0, "?"
	for i := range cmds {
		if infos[i].kind != kindPlain || !infos[i].share || isFanOut(cmds[i].Args) {
			return false, nil
		}
		p := t.Split(cmds[i].Args, nil)
		s.plans = append(s.plans, p) // for clusterForward, if this returns false
		if p.Kind != cluster.Single || p.Slot < 0 {
			return false, nil
		}
		addr, ok := router.Lookup(p.Slot)
		if !ok {
			return false, nil
		}
		addrs = append(addrs, addr)
		if addr == prev {
			continue
		}
		runs++
		prev = addr
		if !slices.Contains(masters[:nm], addr) {
			if nm == len(masters) {
				return false, nil
			}
			masters[nm] = addr
			nm++
		}
	}
	s.addrs = addrs
	if runs == nm {
		return false, nil // already one run per master
	}
	groups := make([]*masterGroup, nm)
	for i, addr := range addrs {
		k := slices.Index(masters[:nm], addr)
		g := groups[k]
		if g == nil {
			g = &masterGroup{addr: addr, slot: s.plans[i].Slot}
			groups[k] = g
		}
		g.idx = append(g.idx, i)
		g.cmds = append(g.cmds, cmds[i])
		g.infos = append(g.infos, infos[i])
	}
	s.submitGroups(groups)
	// While the groups' replies are gathered, the commands sent again
	// (redirects) go on connections of their own: a shared connection
	// may be waiting for this session to take a later group's streamed
	// reply.
	s.gathering = true
	defer func() { s.gathering = false }()
	replies := make([][]byte, len(cmds))
	for _, g := range groups {
		out, err := s.capture(func() error {
			if g.r != nil {
				return s.runSubmitted(g, depth)
			}
			return s.runOn(s.slotRoute(g.slot), nil, g.cmds, g.infos, depth)
		})
		if err != nil {
			return true, err
		}
		frames := splitFrames(out, len(g.cmds))
		if frames == nil {
			// Cannot happen in RESP2; should it, the replies cannot be
			// matched to their commands: end the session.
			return true, errMergeLost
		}
		for k, i := range g.idx {
			replies[i] = frames[k]
		}
	}
	for _, r := range replies {
		s.writeRaw(r)
	}
	return true, nil
}

var errMergeLost = errors.New("cluster: replies of a pipeline could not be matched to its commands")

// submitGroups writes each group on a shared connection to its master,
// when every group may share. A group that could not be submitted (no
// master yet, the connection failed) is left to runOn, in its turn.
func (s *session) submitGroups(groups []*masterGroup) {
	if s.srv.shared == nil {
		return
	}
	for _, g := range groups {
		if !s.mayShare(g.cmds, g.infos) {
			return
		}
	}
	saved := s.route
	defer func() { s.route = saved }()
	for _, g := range groups {
		src := &sourceBox{MasterSource: &slotMaster{r: s.srv.cl.router, slot: g.slot}}
		s.route = src
		c, err := s.sharedConn()
		if err != nil {
			continue
		}
		r := s.srv.reqs.Get().(*shareReq)
		r.load(g.cmds)
		if !c.submit(r) {
			s.shared = nil
			r.release()
			s.srv.reqs.Put(r)
			continue
		}
		g.src, g.c, g.r = src, c, r
	}
}

// runSubmitted answers a group submitted by submitGroups, as runOn answers
// a run: its replies, then the redirects among them.
func (s *session) runSubmitted(g *masterGroup, depth int) error {
	s.srv.cl.countFor(s.srv.m, g.c.b.addr).Add(float64(len(g.cmds)))
	savedRoute, savedDefer := s.route, s.deferred
	s.route, s.deferred = g.src, nil
	<-g.r.done
	err := s.sharedReplies(g.c, g.r, g.cmds, g.infos)
	g.r.release()
	s.srv.reqs.Put(g.r)
	g.r = nil
	d := s.deferred
	s.route, s.deferred = savedRoute, savedDefer
	if err != nil {
		if d != nil {
			d.w.Flush()
			s.w = d.real
		}
		return err
	}
	return s.followRedirects(d, g.cmds, g.infos, depth)
}
