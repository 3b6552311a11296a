package sentinel

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sentView is what a fake sentinel answers about the master.
type sentView struct {
	unknown       bool   // GET-MASTER-ADDR null, SENTINEL MASTER error
	addr          string // GET-MASTER-ADDR-BY-NAME host:port
	infoAddr      string // SENTINEL MASTER ip:port; "" = addr (the §1.4 trap when it differs)
	epoch         int64
	flags         string // "" = "master"
	failoverState string
	promoted      string // SENTINEL REPLICAS lists this replica as "slave,promoted"
	timeoutMs     int64  // SENTINEL MASTER failover-timeout; 0 = not reported
}

// fakeSentinel answers go-redis's sentinel commands from a sentView.
type fakeSentinel struct {
	*fakeServer
	name  string
	runID string
	user  string
	pass  string
	resp3 bool

	mu    sync.Mutex
	view  sentView
	torn  []sentView // served to the next SENTINEL MASTER commands, once each
	peers []map[string]string

	queries   chan query  // SENTINEL subcommands, PSUBSCRIBE and PING, as received
	mutePing  atomic.Bool // subscribed connections get no pong (a dead link)
	refuseSub atomic.Bool // PSUBSCRIBE is refused with -NOPERM (queries work)
}

// newFakeSentinel starts a fake sentinel; opts run before it listens (the
// fields they set are read by connection goroutines without locks).
func newFakeSentinel(t *testing.T, listen string, view sentView, opts ...func(*fakeSentinel)) *fakeSentinel {
	t.Helper()
	f := &fakeSentinel{name: "mymaster", view: view, queries: make(chan query, 4096)}
	f.runID = fmt.Sprintf("run%p", f)
	for _, o := range opts {
		o(f)
	}
	f.fakeServer = newFakeServer(t, listen, f.handle)
	return f
}

func (f *fakeSentinel) set(v sentView) {
	f.mu.Lock()
	f.view = v
	f.mu.Unlock()
}

// tear makes the next SENTINEL MASTER replies come from views (the state
// before a change) while GET-MASTER-ADDR-BY-NAME already answers from the
// current one: a change landing between the two reads.
func (f *fakeSentinel) tear(views ...sentView) {
	f.mu.Lock()
	f.torn = append(f.torn, views...)
	f.mu.Unlock()
}

func (f *fakeSentinel) setPeers(p []map[string]string) {
	f.mu.Lock()
	f.peers = p
	f.mu.Unlock()
}

// query is one command a fake sentinel received.
type query struct {
	name string
	at   time.Time
}

func (f *fakeSentinel) note(q string) {
	select {
	case f.queries <- query{q, time.Now()}:
	default:
	}
}

// drain empties the query log.
func (f *fakeSentinel) drain() {
	for {
		select {
		case <-f.queries:
		default:
			return
		}
	}
}

// publish sends a pmessage to every subscribed connection.
func (f *fakeSentinel) publish(channel, payload string) {
	f.each(func(c *fakeConn) {
		if c.subscribed > 0 {
			c.write(respPush{"pmessage", "*", channel, payload})
		}
	})
}

func (f *fakeSentinel) handle(c *fakeConn, args []string) {
	hello := respMap{"server", "redis", "version", "7.0.15", "proto", "3", "mode", "sentinel"}
	if c.auth(args, f.user, f.pass, f.resp3, hello) {
		return
	}
	f.mu.Lock()
	v, peers := f.view, f.peers
	f.mu.Unlock()
	switch cmd := strings.ToUpper(args[0]); {
	case cmd == "PING":
		f.note("ping")
		if c.subscribed > 0 && f.mutePing.Load() {
			return
		}
		if c.subscribed > 0 && !c.resp3 {
			c.reply(respArr{"pong", ""})
		} else {
			c.reply(respStatus("PONG"))
		}
	case cmd == "PSUBSCRIBE" || cmd == "SUBSCRIBE":
		f.note(strings.ToLower(cmd))
		if f.refuseSub.Load() {
			c.reply(respErr("NOPERM this user has no permissions to access one of the channels used as arguments"))
			return
		}
		for _, p := range args[1:] {
			c.subscribed++
			c.reply(respPush{strings.ToLower(cmd), p, respInt(c.subscribed)})
		}
	case cmd == "SENTINEL" && len(args) >= 2:
		sub := strings.ToLower(args[1])
		f.note(sub)
		known := !v.unknown && len(args) >= 3 && args[2] == f.name
		switch {
		case sub == "myid":
			c.reply(f.runID)
		case sub == "get-master-addr-by-name" && !known:
			c.reply(respNull{})
		case sub == "get-master-addr-by-name":
			h, p, _ := net.SplitHostPort(v.addr)
			c.reply(respStrs{h, p})
		case sub == "master" && !known:
			c.reply(respErr("ERR No such master with that name"))
		case sub == "master":
			f.mu.Lock()
			if len(f.torn) > 0 {
				v, f.torn = f.torn[0], f.torn[1:]
			}
			f.mu.Unlock()
			ia := v.infoAddr
			if ia == "" {
				ia = v.addr
			}
			h, p, _ := net.SplitHostPort(ia)
			flags := v.flags
			if flags == "" {
				flags = "master"
			}
			m := respMap{"name", f.name, "ip", h, "port", p, "runid", "x", "flags", flags}
			if v.failoverState != "" {
				m = append(m, "failover-state", v.failoverState)
			}
			m = append(m, "config-epoch", strconv.FormatInt(v.epoch, 10), "num-slaves", "1", "quorum", "2")
			if v.timeoutMs > 0 {
				m = append(m, "failover-timeout", strconv.FormatInt(v.timeoutMs, 10))
			}
			c.reply(m)
		case (sub == "replicas" || sub == "slaves") && !known:
			c.reply(respErr("ERR No such master with that name"))
		case sub == "replicas" || sub == "slaves":
			reps := []respMap{{"name", "192.0.2.9:6379", "ip", "192.0.2.9", "port", "6379", "flags", "slave"}}
			if v.promoted != "" {
				h, p, _ := net.SplitHostPort(v.promoted)
				reps = append(reps, respMap{"name", v.promoted, "ip", h, "port", p, "flags", "slave,promoted"})
			}
			_, _ = c.bw.WriteString("*" + strconv.Itoa(len(reps)) + "\r\n")
			for _, r := range reps {
				c.write(r)
			}
		case sub == "sentinels" && !known:
			c.reply(respErr("ERR No such master with that name"))
		case sub == "sentinels":
			_, _ = c.bw.WriteString("*" + strconv.Itoa(len(peers)) + "\r\n")
			for _, p := range peers {
				c.write(respMap{"name", p["runid"], "ip", p["ip"], "port", p["port"], "runid", p["runid"], "flags", "sentinel"})
			}
		default:
			c.reply(respErr("ERR unknown sentinel subcommand"))
		}
	default:
		c.reply(respErr("ERR unknown command '" + args[0] + "'"))
	}
}

// fakeNode is a data node answering ROLE.
type fakeNode struct {
	*fakeServer
	user, pass string
	mu         sync.Mutex
	role       string
	roles      chan struct{} // one per ROLE received
	hang       atomic.Bool   // ROLE gets no reply (a frozen node)
}

func newFakeNode(t *testing.T, listen, role string, opts ...func(*fakeNode)) *fakeNode {
	t.Helper()
	n := &fakeNode{role: role, roles: make(chan struct{}, 4096)}
	for _, o := range opts {
		o(n)
	}
	n.fakeServer = newFakeServer(t, listen, n.handle)
	return n
}

func (n *fakeNode) setRole(r string) {
	n.mu.Lock()
	n.role = r
	n.mu.Unlock()
}

func (n *fakeNode) handle(c *fakeConn, args []string) {
	if c.auth(args, n.user, n.pass, false, nil) {
		return
	}
	switch strings.ToUpper(args[0]) {
	case "PING":
		c.reply(respStatus("PONG"))
	case "ROLE":
		select {
		case n.roles <- struct{}{}:
		default:
		}
		if n.hang.Load() {
			return
		}
		n.mu.Lock()
		r := n.role
		n.mu.Unlock()
		if r == "master" {
			c.reply(respArr{"master", respInt(0), respArr{}})
		} else {
			c.reply(respArr{"slave", "127.0.0.1", respInt(1), "connected", respInt(0)})
		}
	default:
		c.reply(respErr("ERR unknown command '" + args[0] + "'"))
	}
}
