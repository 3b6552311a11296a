package main

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// oldSet is one SET of a writer key that the old master executed.
type oldSet struct {
	at     time.Time // the server's timestamp of the command
	writer int
}

// oldMonitor runs MONITOR on the old master and keeps the SETs of the
// writers' keys it executed, with the server's timestamps: unlike INFO
// commandstats, that tells which writer's writes ran there after the
// promotion. Commands that reach the old master over its replication link
// (from the new master, once Sentinel converted it) are skipped by their
// client address, a data node's.
type oldMonitor struct {
	w     *writers
	nodes map[string]bool // data node addresses

	mu   sync.Mutex
	sets []oldSet
	ok   bool // MONITOR was accepted
}

// run reads MONITOR lines from addr until ctx ends or the connection fails
// (a killed master).
func (m *oldMonitor) run(ctx context.Context, wg *sync.WaitGroup, addr string) {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return
	}
	wg.Add(1)
	go func() { // exits when ctx ends (closing the connection) or it fails
		defer wg.Done()
		stop := context.AfterFunc(ctx, func() { nc.Close() })
		defer stop()
		defer nc.Close()
		br := bufio.NewReader(nc)
		if _, err := nc.Write([]byte("MONITOR\r\n")); err != nil {
			return
		}
		if line, err := br.ReadString('\n'); err != nil || line != "+OK\r\n" {
			return
		}
		m.mu.Lock()
		m.ok = true
		m.mu.Unlock()
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if s, ok := m.parse(line); ok {
				m.mu.Lock()
				m.sets = append(m.sets, s)
				m.mu.Unlock()
			}
		}
	}()
}

// parse reads `+1700000000.123456 [0 127.0.0.1:5555] "SET" "key" "value"`.
func (m *oldMonitor) parse(line string) (oldSet, bool) {
	ts, rest, ok := strings.Cut(strings.TrimPrefix(line, "+"), " [")
	if !ok {
		return oldSet{}, false
	}
	client, rest, ok := strings.Cut(rest, "] ")
	if !ok {
		return oldSet{}, false
	}
	if _, from, _ := strings.Cut(client, " "); m.nodes[from] {
		return oldSet{}, false // replicated from a master
	}
	args := strings.SplitN(rest, `" "`, 3)
	if len(args) < 2 || !strings.EqualFold(strings.TrimPrefix(args[0], `"`), "set") {
		return oldSet{}, false
	}
	i := m.w.writerOf(args[1])
	if i < 0 {
		return oldSet{}, false
	}
	sec, frac, _ := strings.Cut(ts, ".")
	s, err1 := strconv.ParseInt(sec, 10, 64)
	us, err2 := strconv.ParseInt(frac, 10, 64)
	if err1 != nil || err2 != nil {
		return oldSet{}, false
	}
	return oldSet{at: time.Unix(s, us*1000), writer: i}, true
}

// setsAfter returns, per writer kind, the SETs the old master executed
// after t, and whether MONITOR ran at all.
func (m *oldMonitor) setsAfter(t time.Time) (map[string]int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{kindPlain: 0, kindPinned: 0}
	for _, s := range m.sets {
		if s.at.After(t) {
			out[m.w.kind(s.writer)]++
		}
	}
	return out, m.ok
}
