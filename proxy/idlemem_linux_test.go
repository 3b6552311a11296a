//go:build linux

package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// BenchmarkIdleClients measures what an idle client costs the proxy, as
// bench/bench.sh's idle test does: a child process (this test binary, as
// TestIdleClientsHelper) opens IDLE_CLIENTS connections (5,000) that each
// send one PING and then idle. It prints, per client, the growth of RSS 2 s
// after the clients are ready (what the bench reports), then once every
// session has left Go's poller: RSS, the runtime's memory by kind after a
// GC, and RSS after debug.FreeOSMemory. IDLE_HEAP_PROFILE=file writes a heap
// profile of that moment (every allocation sampled, which costs memory of
// its own: read the RSS figures from a run without it). IDLE_SETTLE=150s
// also reads RSS that long after, with no GC forced (the runtime's own GC
// runs every 2 minutes, and its scavenger after it).
//
//	go test -run '^$' -bench IdleClients -benchtime 1x ./proxy/
func BenchmarkIdleClients(b *testing.B) {
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("IDLE_CLIENTS")); err == nil && v > 0 {
		n = v
	}
	profile := os.Getenv("IDLE_HEAP_PROFILE")
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	for range b.N {
		measureIdle(b, n, profile)
	}
}

// memPoint is one reading of the process's memory.
type memPoint struct {
	rss int64 // VmRSS, bytes
	ms  runtime.MemStats
}

func readMem(b *testing.B, gc bool) memPoint {
	b.Helper()
	if gc {
		runtime.GC()
	}
	var p memPoint
	runtime.ReadMemStats(&p.ms)
	p.rss = rssBytes(b)
	return p
}

// rssBytes returns VmRSS of this process from /proc/self/status.
func rssBytes(b *testing.B) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kib << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}

func measureIdle(b *testing.B, n int, profile string) {
	r := startRedis(b)
	srv, err := NewServer(Options{Name: "idle", Source: newFakeSource(r), SharedConns: 1}, nil)
	if err != nil {
		b.Fatal(err)
	}
	addr, stop := serve(b, srv)
	defer stop()

	before := readMem(b, true)
	peaks, stopPeaks := samplePeaks()
	child := exec.Command(os.Args[0], "-test.run=^TestIdleClientsHelper$", "-test.count=1")
	child.Env = append(os.Environ(), "IDLE_HELPER_ADDR="+addr, "IDLE_HELPER_N="+strconv.Itoa(n))
	stdin, err := child.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); child.Wait() }()
	ready := ""
	for sc := bufio.NewScanner(stdout); sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "READY") {
			ready = sc.Text()
			break
		}
	}
	if ready != "READY opened="+strconv.Itoa(n)+" failed=0" {
		b.Fatalf("idle clients: %q", ready)
	}
	time.Sleep(2 * time.Second) // what bench/bench.sh waits
	stopPeaks()
	asBench := readMem(b, false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d, total := parkedStates(srv); d == n && total == n {
			break
		}
		if time.Now().After(deadline) {
			d, total := parkedStates(srv)
			b.Fatalf("%d of %d sessions parked, %d detached", total, n, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	deep := readMem(b, false)
	settled := deep
	if d, err := time.ParseDuration(os.Getenv("IDLE_SETTLE")); err == nil {
		time.Sleep(d) // the runtime's own GC (every 2 min) and scavenger
		settled = readMem(b, false)
		b.Logf("  RSS %v later, no GC forced      %8.0f (heap goal %d KiB, HeapIdle-Released %d KiB)", d,
			float64(settled.rss-before.rss)/float64(n), settled.ms.NextGC>>10, (settled.ms.HeapIdle-settled.ms.HeapReleased)>>10)
	}
	afterGC := readMem(b, true)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	debug.FreeOSMemory()
	freed := readMem(b, false)
	st := srv.Stats()

	per := func(a, z int64) float64 { return float64(z-a) / float64(n) }
	u := func(v uint64) int64 { return int64(v) }
	b.Logf("%d idle clients, %d goroutines, %d backend connections open; session struct %d B, parkedConn %d B",
		n, runtime.NumGoroutine(), st.Pool.Open, unsafe.Sizeof(session{}), unsafe.Sizeof(parkedConn{}))
	b.Logf("bytes per idle client:")
	b.Logf("  RSS 2 s after READY (bench.sh)   %8.0f", per(before.rss, asBench.rss))
	b.Logf("  RSS, all detached                %8.0f", per(before.rss, deep.rss))
	b.Logf("  RSS after a GC                   %8.0f", per(before.rss, afterGC.rss))
	b.Logf("  RSS after debug.FreeOSMemory     %8.0f", per(before.rss, freed.rss))
	b.Logf("  after a GC: HeapAlloc (live)      %8.0f", per(u(before.ms.HeapAlloc), u(afterGC.ms.HeapAlloc)))
	b.Logf("              HeapInuse (spans)     %8.0f", per(u(before.ms.HeapInuse), u(afterGC.ms.HeapInuse)))
	b.Logf("              HeapIdle-Released     %8.0f", per(u(before.ms.HeapIdle-before.ms.HeapReleased), u(afterGC.ms.HeapIdle-afterGC.ms.HeapReleased)))
	b.Logf("              StackInuse            %8.0f", per(u(before.ms.StackInuse), u(afterGC.ms.StackInuse)))
	b.Logf("              OtherSys (pollDescs…) %8.0f", per(u(before.ms.OtherSys), u(afterGC.ms.OtherSys)))
	b.Logf("              GCSys                 %8.0f", per(u(before.ms.GCSys), u(afterGC.ms.GCSys)))
	b.Logf("              MSpanSys+MCacheSys    %8.0f", per(u(before.ms.MSpanSys+before.ms.MCacheSys), u(afterGC.ms.MSpanSys+afterGC.ms.MCacheSys)))
	b.Logf("              Sys-HeapReleased      %8.0f", per(u(before.ms.Sys-before.ms.HeapReleased), u(afterGC.ms.Sys-afterGC.ms.HeapReleased)))
	b.Logf("  peak (2 s after READY): HeapInuse %8.0f, StackInuse %8.0f, NextGC %d KiB",
		per(u(before.ms.HeapInuse), u(asBench.ms.HeapInuse)), per(u(before.ms.StackInuse), u(asBench.ms.StackInuse)), asBench.ms.NextGC>>10)
	b.Logf("  peaks while the clients connected: %.0f goroutines, stacks %.0f B/client, heap objects %.0f B/client, heap goal %d KiB",
		peaks[0], peaks[1]/float64(n), peaks[2]/float64(n), int64(peaks[3])>>10)
	b.ReportMetric(per(before.rss, asBench.rss), "rss-B/client")
	b.ReportMetric(per(u(before.ms.HeapAlloc), u(afterGC.ms.HeapAlloc)), "live-B/client")
}

// TestIdleClientsHelper is BenchmarkIdleClients's child: with
// IDLE_HELPER_ADDR set it opens IDLE_HELPER_N connections there (50 at a
// time), sends one PING on each and reads the reply, prints READY and holds
// them until its standard input closes. Otherwise it does nothing.
func TestIdleClientsHelper(t *testing.T) {
	addr := os.Getenv("IDLE_HELPER_ADDR")
	if addr == "" {
		t.Skip("run by BenchmarkIdleClients")
	}
	n, _ := strconv.Atoi(os.Getenv("IDLE_HELPER_N"))
	var (
		mu     sync.Mutex
		conns  []net.Conn
		failed int
		wg     sync.WaitGroup
	)
	jobs := make(chan struct{})
	for range 50 {
		wg.Add(1)
		go func() { // exits when jobs is closed
			defer wg.Done()
			for range jobs {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err == nil {
					c.SetDeadline(time.Now().Add(10 * time.Second))
					var line string
					if _, err = io.WriteString(c, pingCmd); err == nil {
						line, err = bufio.NewReader(c).ReadString('\n')
					}
					if err == nil && line != "+PONG\r\n" {
						err = fmt.Errorf("PING: %q", line)
					}
					c.SetDeadline(time.Time{})
				}
				mu.Lock()
				if err != nil {
					failed++
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	fmt.Printf("READY opened=%d failed=%d\n", len(conns), failed)
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// samplePeaks samples, every 10 ms until stop is called, the peaks of the
// goroutine count, goroutine stacks, heap objects and the GC heap goal (in
// that order), through runtime/metrics (which does not stop the world).
func samplePeaks() (peaks *[4]float64, stop func()) {
	peaks = new([4]float64)
	samples := []rtmetrics.Sample{
		{Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/goal:bytes"},
	}
	done, exited := make(chan struct{}), make(chan struct{})
	go func() { // exits when stop is called
		defer close(exited)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			rtmetrics.Read(samples)
			for i, s := range samples {
				peaks[i] = max(peaks[i], float64(s.Value.Uint64()))
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return peaks, func() { close(done); <-exited }
}
