package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "failoverload:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	addr, masterName, master, scenario, opsLog string
	masterPID                                  int
	sentinels, replicas                        []string
	writers, pinned, rate, idle                int
	warmup, maxRun                             time.Duration
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("failoverload", flag.ContinueOnError)
	fs.StringVar(&c.addr, "addr", "", "address of the proxy under test")
	fs.StringVar(&c.masterName, "master-name", "mymaster", "master name the sentinels monitor")
	fs.StringVar(&c.master, "master", "", "address of the current master")
	fs.IntVar(&c.masterPID, "master-pid", 0, "PID of the current master (kill9, sigstop)")
	sentinels := fs.String("sentinels", "", "sentinel addresses, comma-separated")
	replicas := fs.String("replicas", "", "replica addresses, comma- or space-separated")
	fs.StringVar(&c.scenario, "scenario", "failover", "failover (SENTINEL FAILOVER), kill9 or sigstop")
	fs.IntVar(&c.writers, "writers", 4, "plain writer connections")
	fs.IntVar(&c.pinned, "pinned-writers", 1, "writer connections that set a client name (pinned sessions), at the plain writers' pace")
	fs.IntVar(&c.rate, "rate", 500, "writes per second, all plain writers together")
	fs.IntVar(&c.idle, "idle", 4, "idle connections that SELECT 2")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "load before the event")
	fs.DurationVar(&c.maxRun, "max-run", 40*time.Second, "bound on the time after the event")
	fs.StringVar(&c.opsLog, "ops-log", "", "file to write every write's outcome to (CSV)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.sentinels = split(*sentinels)
	c.replicas = split(*replicas)
	var errs []error
	if c.addr == "" || c.master == "" || len(c.sentinels) == 0 || len(c.replicas) == 0 {
		errs = append(errs, errors.New("-addr, -master, -sentinels and -replicas are required"))
	}
	switch c.scenario {
	case "failover":
	case "kill9", "sigstop":
		if c.masterPID <= 0 {
			errs = append(errs, errors.New("-master-pid is required for "+c.scenario))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown -scenario %q", c.scenario))
	}
	if c.writers < 1 || c.rate < c.writers || c.pinned < 0 {
		errs = append(errs, errors.New("-writers must be at least 1, -rate at least -writers, -pinned-writers at least 0"))
	}
	return c, errors.Join(errs...)
}

func split(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

// run does one measured failover and prints its RESULT line.
func run(args []string, stdout, stderr io.Writer) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stderr, time.Now().Format("15:04:05.000")+" failoverload: "+format+"\n", a...)
	}
	prefix := "fo:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	idle, err := openIdle(c.addr, prefix, c.idle)
	defer func() {
		for _, ic := range idle {
			ic.nc.Close()
		}
	}()
	if err != nil {
		return err
	}

	every := time.Duration(int64(time.Second) * int64(c.writers) / int64(c.rate))
	w := &writers{addr: c.addr, prefix: prefix, every: every, n: c.writers, pinned: c.pinned}

	obsCtx, stopObs := context.WithCancel(context.Background())
	defer stopObs()
	var obsWG sync.WaitGroup
	ev := &events{master: c.masterName, first: make(map[string]time.Time)}
	ev.subscribe(obsCtx, &obsWG, c.sentinels)
	promo := &promotion{}
	promo.pollRoles(obsCtx, &obsWG, c.replicas)
	old := &oldMaster{}
	old.sample(obsCtx, &obsWG, c.master)
	mon := &oldMonitor{w: w, nodes: map[string]bool{c.master: true}}
	for _, r := range c.replicas {
		mon.nodes[r] = true
	}
	mon.run(obsCtx, &obsWG, c.master)

	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var loadWG sync.WaitGroup
	w.run(loadCtx, &loadWG, int((c.warmup+c.maxRun)/every)+1)
	time.Sleep(c.warmup) // a measurement: the load runs on the first master

	old.baseline(context.Background(), c.master)
	event := time.Now()
	var resumed, dead time.Time
	switch c.scenario {
	case "failover":
		err = sentinelFailover(c)
	case "kill9":
		if err = syscall.Kill(c.masterPID, syscall.SIGKILL); err == nil {
			dead = waitRefused(c.master)
		}
	case "sigstop":
		err = syscall.Kill(c.masterPID, syscall.SIGSTOP)
		// Whatever happens next, the master must not stay stopped.
		defer syscall.Kill(c.masterPID, syscall.SIGCONT)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.scenario, err)
	}
	logf("%s at %s", c.scenario, event.Format("15:04:05.000"))

	// Wait for the end of the episode, bounded by -max-run.
	deadline := event.Add(c.maxRun)
	var agreedAt time.Time
	for time.Now().Before(deadline) {
		if agreedAt.IsZero() {
			if a, ok := agreedMaster(context.Background(), c.sentinels, c.masterName); ok && a != c.master {
				agreedAt = time.Now()
				logf("sentinels agree on %s after %.3fs", a, agreedAt.Sub(event).Seconds())
			}
		}
		if c.scenario == "sigstop" && resumed.IsZero() && !agreedAt.IsZero() && time.Since(agreedAt) > time.Second {
			if err := syscall.Kill(c.masterPID, syscall.SIGCONT); err != nil {
				return fmt.Errorf("sigcont: %w", err)
			}
			resumed = time.Now()
			logf("SIGCONT after %.3fs", resumed.Sub(event).Seconds())
		}
		conv, converted := old.converted()
		done := false
		switch c.scenario {
		case "failover", "sigstop":
			done = converted && time.Since(conv) > time.Second
		case "kill9":
			done = !agreedAt.IsZero() && time.Since(event) > 6*time.Second
		}
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopLoad()
	loadWG.Wait()
	stopObs()
	obsWG.Wait()

	if dead.IsZero() {
		dead = event
	}
	return report(c, w, ev, promo, old, mon, idle, prefix, event, dead, resumed, stdout, logf)
}

// waitRefused returns when connections to addr are refused: the killed
// master's process is gone with its sockets. Writes sent until then were
// in flight at the kill. Bounded by 2 s.
func waitRefused(addr string) time.Time {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		nc, err := net.DialTimeout("tcp", addr, 50*time.Millisecond)
		if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		if err == nil {
			nc.Close()
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Now()
}

// sentinelFailover sends SENTINEL FAILOVER to the first sentinel that
// accepts it, retrying -INPROG for up to 10 s.
func sentinelFailover(c config) error {
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		for _, s := range c.sentinels {
			cl := plainClient(s, 0, time.Second)
			err := cl.Do(context.Background(), "sentinel", "failover", c.masterName).Err()
			cl.Close()
			if err == nil {
				return nil
			}
			last = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return last
}

func maxOf(m map[int]int) int {
	n := 0
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

// report checks the outcome and prints the RESULT line.
func report(c config, w *writers, ev *events, promo *promotion, old *oldMaster, mon *oldMonitor, idle []*idleConn,
	prefix string, event, dead, resumed time.Time, stdout io.Writer, logf func(string, ...any)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var newMaster string
	for newMaster == "" && ctx.Err() == nil {
		if a, ok := agreedMaster(ctx, c.sentinels, c.masterName); ok && a != c.master {
			newMaster = a
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if newMaster == "" {
		return errors.New("the sentinels never agreed on a new master")
	}
	ops := w.all()
	var keys []string
	for _, o := range ops {
		if o.err == "" {
			keys = append(keys, w.key(o.writer, o.seq))
		}
	}
	nc := plainClient(newMaster, 0, 5*time.Second)
	defer nc.Close()
	missing, err := missingOn(ctx, nc, keys)
	if err != nil {
		return fmt.Errorf("check acknowledged writes on %s: %w", newMaster, err)
	}

	promoAddr, promoAt := promo.get()
	if promoAt.IsZero() { // not seen by ROLE polling: fall back to Sentinel's word
		promoAt, _ = ev.at("+promoted-slave")
	}
	errs, inFlight := 0, 0
	perWriter := make(map[int]int)
	var first time.Time
	for _, o := range ops {
		if o.err != "" {
			errs++
			perWriter[o.writer]++
		}
		if o.sent.Before(dead) && o.done.After(event) {
			inFlight++ // sent before the master was gone, answered after the event
		}
		if o.err == "" && !promoAt.IsZero() && o.done.After(promoAt) && !missing[w.key(o.writer, o.seq)] &&
			(first.IsZero() || o.done.Before(first)) {
			first = o.done
		}
	}
	idleOK, idleErr := checkIdle(ctx, idle, prefix, newMaster)

	secs := func(from, to time.Time) string {
		if from.IsZero() || to.IsZero() {
			return "-"
		}
		return strconv.FormatFloat(to.Sub(from).Seconds(), 'f', 3, 64)
	}
	oldAfter := "-"
	if c.scenario != "kill9" && !promoAt.IsZero() {
		n, seen := old.setsAfter(promoAt)
		if seen || c.scenario == "failover" {
			oldAfter = strconv.FormatInt(n, 10)
		}
	}
	promoted, _ := ev.at("+promoted-slave")
	switchAt, _ := ev.at("+switch-master")
	fields := []string{
		"scenario=" + c.scenario,
		"new_master=" + newMaster,
		"promoted_by_role=" + promoAddr,
		"event_to_promotion=" + secs(event, promoAt),
		"event_to_promoted_slave=" + secs(event, promoted),
		"event_to_switch_master=" + secs(event, switchAt),
		"event_to_first_new=" + secs(event, first),
		"promotion_to_first_new=" + secs(promoAt, first),
		"writes=" + strconv.Itoa(len(ops)),
		"acked=" + strconv.Itoa(len(keys)),
		"errors=" + strconv.Itoa(errs),
		"max_errors_per_writer=" + strconv.Itoa(maxOf(perWriter)),
		"in_flight=" + strconv.Itoa(inFlight),
		"lost=" + strconv.Itoa(len(missing)),
		"old_after_promotion=" + oldAfter,
		"idle_ok=" + strconv.Itoa(idleOK) + "/" + strconv.Itoa(len(idle)),
	}
	if c.scenario == "kill9" {
		fields = append(fields, "event_to_dead="+secs(event, dead))
	}
	if !resumed.IsZero() {
		fields = append(fields, "event_to_sigcont="+secs(event, resumed))
	}
	for _, kind := range []string{kindPlain, kindPinned} {
		fields = append(fields, kindFields(c, w, ops, missing, mon, kind, event, promoAt, secs)...)
	}
	if idleErr != "" {
		fields = append(fields, "idle_error="+strconv.Quote(idleErr))
	}
	fmt.Fprintln(stdout, "RESULT "+strings.Join(fields, " "))
	logf("%s", strings.Join(fields, " "))
	if c.opsLog != "" {
		f, err := os.Create(c.opsLog)
		if err != nil {
			return err
		}
		defer f.Close()
		return w.writeLog(f)
	}
	return nil
}

// kindFields are the RESULT fields of one kind of writer, named
// <kind>_<field>: its acknowledged writes, errors (in all and at most per
// writer), acknowledged writes missing on the new master, SETs of its keys
// the old master ran after the promotion (from MONITOR; "-" when it could
// not run or the master was killed), and its first write acknowledged by
// the new master.
func kindFields(c config, w *writers, ops []op, missing map[string]bool, mon *oldMonitor, kind string,
	event, promoAt time.Time, secs func(from, to time.Time) string) []string {
	acked, errs, lost := 0, 0, 0
	perWriter := make(map[int]int)
	var first time.Time
	for _, o := range ops {
		if w.kind(o.writer) != kind {
			continue
		}
		switch {
		case o.err != "":
			errs++
			perWriter[o.writer]++
		case missing[w.key(o.writer, o.seq)]:
			acked++
			lost++
		default:
			acked++
			if !promoAt.IsZero() && o.done.After(promoAt) && (first.IsZero() || o.done.Before(first)) {
				first = o.done
			}
		}
	}
	oldAfter := "-"
	if c.scenario != "kill9" && !promoAt.IsZero() {
		if n, ok := mon.setsAfter(promoAt); ok {
			oldAfter = strconv.Itoa(n[kind])
		}
	}
	return []string{
		kind + "_writers=" + strconv.Itoa(map[string]int{kindPlain: w.n, kindPinned: w.pinned}[kind]),
		kind + "_acked=" + strconv.Itoa(acked),
		kind + "_errors=" + strconv.Itoa(errs),
		kind + "_max_errors_per_writer=" + strconv.Itoa(maxOf(perWriter)),
		kind + "_lost=" + strconv.Itoa(lost),
		kind + "_old_after_promotion=" + oldAfter,
		kind + "_event_to_first_new=" + secs(event, first),
		kind + "_promotion_to_first_new=" + secs(promoAt, first),
	}
}
