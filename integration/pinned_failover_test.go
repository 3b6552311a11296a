package integration

// Issue 10, item 2: pinned sessions must obey the failover hold. 12 clients
// that each set a name (CLIENT SETNAME pins the session to one backend
// connection) send random pipelines of INCR of a counter of their own, SET
// and GET, SELECT, MULTI/INCR/SET/EXEC and CLIENT SETNAME through the proxy
// while the sentinels fail the master over twice. Before the fix the pinned
// sessions went on writing to the old master through the hold: increments
// acknowledged there were lost, and the counters went backwards on the new
// master (18 of 24 counters in the run).
//
// Each client checks every reply against its command as it arrives: an
// INCR answers its counter's last value plus one (plus the increments
// answered "may have run" since), a GET answers the SET just before it, and
// so on. Afterwards every counter read on the final master equals the
// acknowledged increments (plus at most those that may have run), and each
// session still has its client name, on the final master too.

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	pinClients    = 12
	pinMaxBatches = 10000                 // per client; with pinPause ~3 minutes at most
	pinPause      = 15 * time.Millisecond // between a client's batches
	pinReadWait   = 30 * time.Second      // per reply: longer than the hold
	pinMaxNotes   = 20                    // error and mismatch texts kept per client
)

// pinOp is what a command of a batch is, for checking its reply.
type pinOp int

const (
	opIncr pinOp = iota
	opSet
	opGet
	opSelect
	opMulti
	opExec
	opSetName
)

type pinCmd struct {
	op   pinOp
	args []string
	db   int    // SELECT
	val  string // SET, CLIENT SETNAME
}

// pinClient is one raw client connection and its model of its session.
// Only its goroutine touches it until run returns, but for lastStart.
type pinClient struct {
	i   int
	c   *respConn
	rng *rand.Rand
	key string // its counter, in db 0 and db 1

	lastStart atomic.Int64 // start (UnixNano) of the last batch fully answered

	db      int      // current db, -1 when unknown (a SELECT may have run)
	names   []string // the names the session may have
	inMulti bool
	setOK   string // the value of the SET just before, if acknowledged
	queued  []pinCmd
	nameSeq int

	last    [2]int64 // each db's counter value, from the last INCR reply
	slack   [2]int   // increments that may have run since that reply
	acked   [2]int
	maybe   [2]int
	unknown int // increments acknowledged or maybe run while db was unknown
	drop    [2]int64
	batches int
	cmds    int
	nErrs   int
	errs    []string // error replies (pinMaxNotes kept)
	bad     []string // replies that do not fit their command
	dropped error    // the connection failed
}

func newPinClient(t *testing.T, addr, prefix string, i int, seed uint64) *pinClient {
	t.Helper()
	c := &pinClient{i: i, c: dialRESP(t, addr), rng: rand.New(rand.NewPCG(seed, uint64(i))),
		key: prefix + "ctr:" + strconv.Itoa(i)}
	if i%2 == 1 {
		if r := c.c.mustDo(t, "HELLO", "3"); !strings.HasPrefix(r, "%") {
			t.Fatalf("client %d: HELLO 3 = %q", i, r)
		}
	}
	name := c.nextName()
	if r := c.c.mustDo(t, "CLIENT", "SETNAME", name); r != "+OK\r\n" {
		t.Fatalf("client %d: CLIENT SETNAME = %q", i, r)
	}
	c.names = []string{name}
	if r := c.c.mustDo(t, "SELECT", "0"); r != "+OK\r\n" {
		t.Fatalf("client %d: SELECT 0 = %q", i, r)
	}
	return c
}

func (c *pinClient) nextName() string {
	c.nameSeq++
	return "pin-" + strconv.Itoa(c.i) + "-" + strconv.Itoa(c.nameSeq)
}

// batch draws a random pipeline. A session whose db is unknown starts it
// with a SELECT.
func (c *pinClient) batch() []pinCmd {
	var cmds []pinCmd
	sel := func(db int) {
		cmds = append(cmds, pinCmd{op: opSelect, args: []string{"SELECT", strconv.Itoa(db)}, db: db})
	}
	if c.db < 0 {
		sel(c.rng.IntN(2))
	}
	incr := pinCmd{op: opIncr, args: []string{"INCR", c.key}}
	for range 1 + c.rng.IntN(6) {
		val := strconv.Itoa(c.i) + ":" + strconv.FormatUint(c.rng.Uint64(), 36)
		set := pinCmd{op: opSet, args: []string{"SET", c.key + ":s", val}, val: val}
		switch n := c.rng.IntN(20); {
		case n < 8:
			cmds = append(cmds, incr)
		case n < 12:
			cmds = append(cmds, set, pinCmd{op: opGet, args: []string{"GET", c.key + ":s"}})
		case n < 15:
			sel(c.rng.IntN(2))
		case n < 18:
			cmds = append(cmds, pinCmd{op: opMulti, args: []string{"MULTI"}}, incr, set, pinCmd{op: opExec, args: []string{"EXEC"}})
		default:
			name := c.nextName()
			cmds = append(cmds, pinCmd{op: opSetName, args: []string{"CLIENT", "SETNAME", name}, val: name})
		}
	}
	return cmds
}

// run sends batches until ctx ends, the connection fails or pinMaxBatches.
// A batch in flight when ctx ends is answered to the end.
func (c *pinClient) run(ctx context.Context) {
	for range pinMaxBatches {
		if ctx.Err() != nil {
			return
		}
		cmds := c.batch()
		start := time.Now()
		var req []byte
		for _, cmd := range cmds {
			req = append(req, encode(cmd.args...)...)
		}
		c.c.nc.SetWriteDeadline(time.Now().Add(pinReadWait))
		if _, err := c.c.nc.Write(req); err != nil {
			c.dropped = err
			return
		}
		for _, cmd := range cmds {
			f, err := c.c.read(pinReadWait)
			if err != nil {
				c.dropped = err
				return
			}
			c.handle(cmd, f)
		}
		c.batches++
		c.cmds += len(cmds)
		c.lastStart.Store(start.UnixNano())
		select {
		case <-ctx.Done():
			return
		case <-time.After(pinPause):
		}
	}
}

// saysMayHaveRun reports whether an error reply says the command may have run.
func saysMayHaveRun(f string) bool { return strings.Contains(f, "may have run") }

func (c *pinClient) note(list *[]string, cmd pinCmd, f string) {
	if len(*list) < pinMaxNotes {
		*list = append(*list, strings.Join(cmd.args, " ")+" -> "+strings.TrimSpace(f))
	}
}

func (c *pinClient) noteErr(cmd pinCmd, f string) {
	c.nErrs++
	c.note(&c.errs, cmd, f)
}

// handle checks one reply and updates the model.
func (c *pinClient) handle(cmd pinCmd, f string) {
	isErr := strings.HasPrefix(f, "-")
	setOK := c.setOK
	c.setOK = ""
	if c.inMulti && (cmd.op == opIncr || cmd.op == opSet) {
		switch {
		case f == "+QUEUED\r\n":
			c.queued = append(c.queued, cmd)
		case isErr:
			c.noteErr(cmd, f) // EXEC will answer EXECABORT
		default:
			c.note(&c.bad, cmd, f)
		}
		return
	}
	switch cmd.op {
	case opIncr:
		c.incrReply(cmd, f)
	case opSet:
		switch {
		case f == "+OK\r\n":
			c.setOK = cmd.val
		case isErr:
			c.noteErr(cmd, f)
		default:
			c.note(&c.bad, cmd, f)
		}
	case opGet:
		switch want := "$" + strconv.Itoa(len(setOK)) + "\r\n" + setOK + "\r\n"; {
		case isErr:
			c.noteErr(cmd, f)
		case setOK != "" && f != want:
			c.note(&c.bad, cmd, f+" (want "+want+")")
		}
	case opSelect:
		switch {
		case f == "+OK\r\n":
			c.db = cmd.db
		case isErr:
			c.noteErr(cmd, f)
			if saysMayHaveRun(f) {
				c.db = -1
			}
		default:
			c.note(&c.bad, cmd, f)
		}
	case opMulti:
		switch {
		case f == "+OK\r\n":
			c.inMulti, c.queued = true, c.queued[:0]
		case isErr:
			c.noteErr(cmd, f) // the INCR and SET then run on their own
		default:
			c.note(&c.bad, cmd, f)
		}
	case opExec:
		c.execReply(cmd, f)
	case opSetName:
		switch {
		case f == "+OK\r\n":
			c.names = []string{cmd.val}
		case isErr:
			c.noteErr(cmd, f)
			if saysMayHaveRun(f) {
				c.names = append(c.names, cmd.val)
			}
		default:
			c.note(&c.bad, cmd, f)
		}
	}
}

// execReply checks EXEC's reply: the queued INCR's and SET's, or an error.
func (c *pinClient) execReply(cmd pinCmd, f string) {
	wasMulti := c.inMulti
	c.inMulti = false
	queued := c.queued
	c.queued = nil
	switch {
	case strings.HasPrefix(f, "-"):
		c.noteErr(cmd, f)
		if wasMulti && saysMayHaveRun(f) {
			for _, q := range queued {
				if q.op == opIncr {
					c.incrMaybe()
				}
			}
		}
		return
	case !wasMulti:
		c.note(&c.bad, cmd, f+" (EXEC without MULTI)")
		return
	}
	lines := strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n")
	if lines[0] != "*"+strconv.Itoa(len(queued)) || len(lines) != len(queued)+1 {
		c.note(&c.bad, cmd, f)
		return
	}
	for j, q := range queued {
		if q.op == opIncr {
			c.incrReply(q, lines[j+1]+"\r\n")
		} else if lines[j+1] != "+OK" {
			c.note(&c.bad, q, lines[j+1]+" (in EXEC)")
		}
	}
}

// incrReply checks an INCR's reply against the counter of the current db.
func (c *pinClient) incrReply(cmd pinCmd, f string) {
	if strings.HasPrefix(f, "-") {
		c.noteErr(cmd, f)
		if saysMayHaveRun(f) {
			c.incrMaybe()
		}
		return
	}
	v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(f, ":"), "\r\n"), 10, 64)
	if !strings.HasPrefix(f, ":") || err != nil {
		c.note(&c.bad, cmd, f)
		return
	}
	if c.db < 0 {
		c.unknown++
		c.slack[0]++
		c.slack[1]++
		return
	}
	d := c.db
	c.acked[d]++
	switch want := c.last[d] + 1; {
	case v < want:
		c.drop[d] = max(c.drop[d], want-v)
	case v > want+int64(c.slack[d]):
		c.note(&c.bad, cmd, f+" in db "+strconv.Itoa(d)+" after "+strconv.FormatInt(c.last[d], 10)+
			" and "+strconv.Itoa(c.slack[d])+" that may have run: an increment nobody was told of")
	}
	c.last[d], c.slack[d] = v, 0
}

func (c *pinClient) incrMaybe() {
	if c.db < 0 {
		c.unknown++
		c.slack[0]++
		c.slack[1]++
		return
	}
	c.maybe[c.db]++
	c.slack[c.db]++
}

// waitBatches waits until every client had a batch that started after at
// fully answered.
func waitBatches(t *testing.T, clients []*pinClient, at time.Time, what string) {
	t.Helper()
	waitFor(t, 30*time.Second, "every client to be answered a batch sent after "+what, func() bool {
		for _, c := range clients {
			if c.lastStart.Load() <= at.UnixNano() {
				return false
			}
		}
		return true
	})
}

func TestPinnedFailover(t *testing.T) {
	st := startStack(t, stackOptions{HoldTimeout: 10 * time.Second})
	prefix := keyPrefix(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	var wg sync.WaitGroup
	stop := func() { cancel(); wg.Wait() }
	defer stop() // after a t.Fatal too; stop is idempotent
	clients := make([]*pinClient, pinClients)
	for i := range clients {
		clients[i] = newPinClient(t, st.Addr, prefix, i, seed)
	}
	for _, c := range clients {
		wg.Add(1)
		go func() { // exits when ctx ends, the connection fails or after pinMaxBatches
			defer wg.Done()
			c.run(ctx)
		}()
	}
	waitBatches(t, clients, time.Now().Add(500*time.Millisecond), "the start")

	fctx := testContext(t, 2*time.Minute)
	master := st.Topo.Master().Addr
	for n := range 2 {
		next, at := failoverTo(t, st, fctx, master)
		waitBatches(t, clients, at, "failover "+strconv.Itoa(n+1))
		t.Logf("failover %d: %s -> %s", n+1, master, next)
		master = next
	}
	stop()

	checkPinClients(t, clients, master)
}

// checkPinClients checks what the clients saw and what the final master
// holds.
func checkPinClients(t *testing.T, clients []*pinClient, master string) {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	dbs := [2]*redis.Client{directTo(master, 0), directTo(master, 1)}
	defer dbs[0].Close()
	defer dbs[1].Close()
	list, err := dbs[0].ClientList(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST on the final master %s: %v", master, err)
	}
	backwards, counters, batches, cmds, errs := 0, 0, 0, 0, 0
	var maxDrop int64
	for _, c := range clients {
		batches, cmds, errs = batches+c.batches, cmds+c.cmds, errs+c.nErrs
		if c.dropped != nil {
			t.Errorf("client %d: its connection failed: %v", c.i, c.dropped)
		}
		if len(c.bad) > 0 {
			t.Errorf("client %d: replies that do not fit their command: %q", c.i, c.bad)
		}
		if c.nErrs > 0 {
			t.Errorf("client %d: %d error replies in planned failovers, e.g. %q", c.i, c.nErrs, c.errs)
		}
		var got [2]int64
		for d := range 2 {
			counters++
			v, err := dbs[d].Get(ctx, c.key).Int64()
			if err != nil && err != redis.Nil {
				t.Fatalf("GET %s in db %d of %s: %v", c.key, d, master, err)
			}
			got[d] = v
			if c.drop[d] > 0 {
				backwards++
				maxDrop = max(maxDrop, c.drop[d])
			}
			if got[d] < c.last[d] || got[d] > c.last[d]+int64(c.slack[d]) {
				t.Errorf("client %d, db %d: the counter on the final master is %d; its last INCR answered %d, and %d increments since may have run",
					c.i, d, got[d], c.last[d], c.slack[d])
			}
			if c.unknown == 0 && (got[d] < int64(c.acked[d]) || got[d] > int64(c.acked[d]+c.maybe[d])) {
				t.Errorf("client %d, db %d: the counter on the final master is %d after %d acknowledged increments and %d that may have run",
					c.i, d, got[d], c.acked[d], c.maybe[d])
			}
		}
		if sum, acked := got[0]+got[1], int64(c.acked[0]+c.acked[1]); c.unknown > 0 &&
			(sum < acked || sum > acked+int64(c.maybe[0]+c.maybe[1]+c.unknown)) {
			t.Errorf("client %d: the counters on the final master add up to %d after %d acknowledged increments, %d that may have run and %d in an unknown db",
				c.i, sum, acked, c.maybe[0]+c.maybe[1], c.unknown)
		}
		if c.dropped != nil {
			continue
		}
		// The session kept its name, on the final master too.
		r, err := c.c.do("CLIENT", "GETNAME")
		name := strings.TrimSuffix(r[strings.Index(r, "\n")+1:], "\r\n")
		switch {
		case err != nil:
			t.Errorf("client %d: CLIENT GETNAME: %v", c.i, err)
		case !strings.HasPrefix(r, "$") || !slices.Contains(c.names, name):
			t.Errorf("client %d: CLIENT GETNAME = %q, want one of %q", c.i, r, c.names)
		case !strings.Contains(list, " name="+name+" "):
			t.Errorf("client %d: no connection named %s on the final master %s", c.i, name, master)
		}
	}
	if backwards > 0 {
		t.Errorf("%d of %d counters went backwards, by up to %d acknowledged increments", backwards, counters, maxDrop)
	}
	t.Logf("%d clients: %d batches, %d commands, %d error replies; %d counters", len(clients), batches, cmds, errs, counters)
}
