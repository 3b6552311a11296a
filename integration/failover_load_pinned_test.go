package integration

// The pinned writers of the failover load (issue 10, item 2). A session
// whose client set a name (go-redis sends CLIENT SETNAME, or HELLO …
// SETNAME, on every new connection, as Lettuce, Redisson and redis-py with
// client_name do) is pinned to one backend connection; so is a session
// inside MULTI. Such sessions used to go on writing to the old master
// through the failover hold and lose acknowledged writes. Their writes use
// the plain writers' keys (writerKey, from index loadWriters on), so every
// check of the plain writers (acknowledged writes on the new master,
// nothing on the old master after the promotion, errors) covers them too;
// the checks here add what only they have: the transaction counter and the
// client names.

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// loadPinnedWriters write through clients that set a name: pinned
	// sessions, one in RESP2 and one in RESP3.
	loadPinnedWriters = 2
	// loadTxWriters write in MULTI/INCR/SET/EXEC transactions.
	loadTxWriters = 1
)

// pinnedWriter is a writer whose session the proxy pins.
type pinnedWriter struct {
	w    int // index in foLoad.writers and writerKey
	name string
	c    *redis.Client
	tx   bool // MULTI/EXEC writer: INCRs txCounterKey(w)
}

// startPinnedWriters starts the pinned and the transaction writers beside
// the plain ones, under the same context and wait group.
func (l *foLoad) startPinnedWriters(ctx context.Context) {
	for i := range loadPinnedWriters + loadTxWriters {
		pw := &pinnedWriter{w: len(l.writers), tx: i >= loadPinnedWriters}
		proto := 2 + i%2
		log := &opLog{name: "pinned writer " + strconv.Itoa(pw.w) + " (CLIENT SETNAME, RESP" + strconv.Itoa(proto) + ")"}
		if pw.tx {
			log.name = "MULTI writer " + strconv.Itoa(pw.w) + " (MULTI/INCR/SET/EXEC)"
			pw.c = l.client(proto)
		} else {
			pw.name = "fo-pinned-" + strconv.Itoa(pw.w) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			pw.c = l.namedClient(proto, pw.name)
		}
		l.writers = append(l.writers, log)
		l.pinned = append(l.pinned, pw)
		l.wg.Add(1)
		go func() { // exits when ctx ends
			defer l.wg.Done()
			l.runPinnedWriter(ctx, pw, log)
		}()
	}
}

// namedClient is client with a client name: every connection it makes
// sets the name first, which pins the session in the proxy.
func (l *foLoad) namedClient(proto int, name string) *redis.Client {
	c := l.newCli(&redis.Options{
		Protocol: proto, PoolSize: 1, MaxRetries: -1, ClientName: name,
		ReadTimeout: loadClientTimeout, WriteTimeout: loadClientTimeout, DialTimeout: 5 * time.Second,
	})
	l.conns = append(l.conns, c)
	return c
}

func (l *foLoad) txCounterKey(w int) string { return l.prefix + "txctr" + strconv.Itoa(w) }

// runPinnedWriter writes like runWriter, at the same pace; the
// transaction writer also counts its transactions in txCounterKey.
func (l *foLoad) runPinnedWriter(ctx context.Context, pw *pinnedWriter, log *opLog) {
	n := loadWriters + loadPinnedWriters + loadTxWriters
	paced(ctx, loadWriteEvery*time.Duration(pw.w)/time.Duration(n), loadWriteEvery, func(seq int) {
		r := opRecord{seq: seq, sent: time.Now()}
		// Not ctx: stopping the load must not fail a command in flight.
		var err error
		if pw.tx {
			_, err = pw.c.TxPipelined(context.Background(), func(p redis.Pipeliner) error {
				p.Incr(context.Background(), l.txCounterKey(pw.w))
				p.Set(context.Background(), l.writerKey(pw.w, seq), seq, 0)
				return nil
			})
		} else {
			err = pw.c.Set(context.Background(), l.writerKey(pw.w, seq), seq, 0).Err()
		}
		r.done = time.Now()
		if err != nil {
			r.err = err.Error()
		}
		log.add(r)
	})
}

// checkPinned runs after the load stopped, on the new master: every
// transaction counter equals the acknowledged transactions (plus at most
// those answered with an error: they may have run; less one acknowledged
// just before a crash or hang, which Redis may not have replicated:
// foExpect.unreplicatedBefore), and every named
// session kept its name through the failover, on the new master too.
func (l *foLoad) checkPinned(t *testing.T, newMaster string, exp foExpect) {
	t.Helper()
	ctx := testContext(t, 20*time.Second)
	nc := directTo(newMaster, 0)
	defer nc.Close()
	list, err := nc.ClientList(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST on the new master %s: %v", newMaster, err)
	}
	for _, pw := range l.pinned {
		log := l.writers[pw.w]
		if pw.tx {
			acked, failed, unreplicated := 0, 0, 0
			for _, r := range log.snapshot() {
				switch {
				case r.err != "":
					failed++
				case exp.unreplicated(r.done):
					unreplicated = 1 // one at most: see foExpect
					acked++
				default:
					acked++
				}
			}
			got, err := nc.Get(ctx, l.txCounterKey(pw.w)).Int()
			if err != nil {
				t.Errorf("%s: GET %s on the new master: %v", log.name, l.txCounterKey(pw.w), err)
			} else if got < acked-unreplicated || got > acked+failed {
				t.Errorf("%s: the counter on the new master is %d after %d acknowledged transactions and %d errors",
					log.name, got, acked, failed)
			} else {
				t.Logf("%s: counter %d on the new master, %d transactions acknowledged, %d errors", log.name, got, acked, failed)
			}
			continue
		}
		// Through the proxy, on the writer's own session.
		if got, err := pw.c.ClientGetName(ctx).Result(); err != nil || got != pw.name {
			t.Errorf("%s: CLIENT GETNAME through the proxy after the failover = %q, %v; want %q", log.name, got, err, pw.name)
		}
		// The name was replayed on the new master's connection.
		if !strings.Contains(list, " name="+pw.name+" ") {
			t.Errorf("%s: no connection named %s on the new master %s", log.name, pw.name, newMaster)
		}
	}
}
