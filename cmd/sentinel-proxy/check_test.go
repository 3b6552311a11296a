package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// checkConfig is one config file for `check`; empty passwords are left out.
type checkConfig struct {
	sentinels        []string
	sentinelPassword string
	backendPassword  string
	masterNames      []string
}

// write renders c into a file in dir and returns its path.
func (c checkConfig) write(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "sentinels: [%s]\n", strings.Join(c.sentinels, ", "))
	if c.sentinelPassword != "" {
		fmt.Fprintf(&b, "sentinel_password: %q\n", c.sentinelPassword)
	}
	if c.backendPassword != "" {
		fmt.Fprintf(&b, "backend_password: %q\n", c.backendPassword)
	}
	b.WriteString("dial_timeout: 500ms\nquery_timeout: 500ms\ngroups:\n")
	for _, n := range c.masterNames {
		fmt.Fprintf(&b, "  - {master_name: %s, listen: \"127.0.0.1:0\"}\n", n)
	}
	path := filepath.Join(t.TempDir(), "sentinel-proxy.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCheck runs `check` against one real topology with passwords on the
// data nodes and on the sentinels, with good and broken configurations.
func TestCheck(t *testing.T) {
	const dataPass, sentPass = "d4ta-pw", "s3ntinel-pw"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topo, err := topology.Start(ctx, topology.Options{Password: dataPass, SentinelPassword: sentPass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = topo.Stop() })
	sentinels := topo.SentinelAddrs()
	master := topo.Master().Addr
	dead := unusedAddr(t)
	good := checkConfig{sentinels: sentinels, sentinelPassword: sentPass, backendPassword: dataPass, masterNames: []string{topo.MasterName()}}

	tests := []struct {
		name   string
		config func(c *checkConfig)
		ok     bool
		group  string   // whose rows row checks; "" = the topology's master name
		row    []string // every topology sentinel's cells: MASTER, EPOCH, ROLE VERIFIED, REPLICAS, PROBLEMS; each a prefix, "" = any
		want   []string // in stdout
		errs   []string // in the returned error
		pause  bool     // the last sentinel is frozen (SIGSTOP) during the check
	}{
		{name: "good config", config: func(c *checkConfig) {}, ok: true,
			row:  []string{master, "0", "yes", "2/2", "-"},
			want: []string{"OK: 3/3 sentinels name " + master + " (epoch 0, quorum 2), ROLE master verified"}},
		{name: "wrong sentinel password", config: func(c *checkConfig) { c.sentinelPassword = "nope" },
			row:  []string{"-", "-", "-", "-", "auth failed: sentinel password rejected (WRONGPASS)"},
			want: []string{"problem: no reachable sentinel (3 configured)"},
			errs: []string{"sentinel " + sentinels[0] + ": auth failed", "no reachable sentinel"}},
		{name: "no sentinel password", config: func(c *checkConfig) { c.sentinelPassword = "" },
			row:  []string{"-", "-", "-", "-", "auth failed: the sentinel needs a password (NOAUTH)"},
			errs: []string{"NOAUTH"}},
		{name: "unknown master name", config: func(c *checkConfig) { c.masterNames = append(c.masterNames, "nosuch") },
			group: "nosuch",
			row:   []string{"-", "-", "-", "-", `unknown master name "nosuch"`},
			want:  []string{`problem: no sentinel monitors a master named "nosuch"`, "OK: 3/3 sentinels name " + master},
			errs:  []string{"nosuch: sentinel " + sentinels[0] + `: unknown master name "nosuch"`}},
		{name: "wrong backend password", config: func(c *checkConfig) { c.backendPassword = "nope" },
			row:  []string{master, "0", "no: backend password rejected (WRONGPASS)", "2/2", "-"},
			errs: []string{"ROLE on " + master + " unverifiable: backend password rejected (WRONGPASS)"}},
		{name: "no backend password", config: func(c *checkConfig) { c.backendPassword = "" },
			row:  []string{master, "0", "no: data node needs a password (NOAUTH)", "2/2", "-"},
			errs: []string{"ROLE on " + master + " unverifiable: data node needs a password (NOAUTH)"}},
		{name: "one sentinel unreachable", config: func(c *checkConfig) { c.sentinels = append(c.sentinels, dead) },
			row:  []string{master, "0", "yes", "2/2", "knows 2 other sentinel(s); the config lists 4 sentinels"},
			want: []string{"unreachable: "},
			errs: []string{"sentinel " + dead + ": unreachable"}},
		{name: "no sentinel reachable", config: func(c *checkConfig) { c.sentinels = []string{dead} },
			want: []string{"problem: no reachable sentinel (1 configured)"},
			errs: []string{"no reachable sentinel"}},
		{name: "frozen sentinel", config: func(c *checkConfig) {}, pause: true,
			want: []string{"1 problem(s)"},
			errs: []string{"sentinel " + sentinels[2] + ": unreachable: ", "i/o timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			c.sentinels = append([]string(nil), good.sentinels...)
			c.masterNames = append([]string(nil), good.masterNames...)
			tt.config(&c)
			if tt.pause {
				n := topo.SentinelNodes()[2]
				if err := n.Pause(); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := n.Resume(); err != nil {
						t.Error(err)
					}
				}()
			}
			var stdout, stderr bytes.Buffer
			began := time.Now()
			err := run(ctx, []string{"check", "--config", c.write(t)}, &stdout, &stderr, noEnv)
			took := time.Since(began)
			out := stdout.String()
			t.Logf("check took %v; stdout:\n%s", took, out)
			if took > 5*time.Second {
				t.Errorf("check took %v, want it bounded by the timeouts (2*500ms dial + 6*500ms query + 1s)", took)
			}
			code := exitCode(err, &stderr)
			if tt.ok && code != 0 || !tt.ok && code != 1 {
				t.Fatalf("exit code %d (err %v), want ok=%v", code, err, tt.ok)
			}
			group := tt.group
			if group == "" {
				group = topo.MasterName()
			}
			rows := tableRows(out, group)
			for _, s := range c.sentinels {
				if _, ok := rows[s]; !ok {
					t.Errorf("group %s has no row for sentinel %s", group, s)
				}
			}
			if tt.row != nil {
				for _, s := range sentinels {
					cells := rows[s]
					if len(cells) != len(tt.row) {
						t.Errorf("row of %s has cells %q, want %d", s, cells, len(tt.row))
						continue
					}
					for i, want := range tt.row {
						if !strings.HasPrefix(cells[i], want) {
							t.Errorf("row of %s: cell %d is %q, want %q", s, i+1, cells[i], want)
						}
					}
				}
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q", w)
				}
			}
			for _, w := range tt.errs {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
			for _, secret := range []string{dataPass, sentPass} {
				if strings.Contains(out+stderr.String(), secret) {
					t.Errorf("output shows a password")
				}
			}
		})
	}
	// A node the sentinels do not name as master: what check says when
	// ROLE disagrees with them.
	t.Run("ROLE on a replica", func(t *testing.T) {
		replica := topo.Nodes()[1].Addr
		o := sentinel.Options{MasterName: "m", Sentinels: sentinels, DataPassword: dataPass, DialTimeout: time.Second, QueryTimeout: time.Second}
		v := roleOf(ctx, o, replica)
		if v.cell != "no: ROLE is slave" || !strings.Contains(v.problem, "ROLE on "+replica+` is "slave", not master`) {
			t.Errorf("verdict %+v, want ROLE is slave", v)
		}
	})
}

// tableRows returns the rows of group's table in check's output: sentinel
// address to the other cells (MASTER, EPOCH, ROLE VERIFIED, REPLICAS,
// PROBLEMS). Cells are separated by two or more spaces.
func tableRows(out, group string) map[string][]string {
	rows := make(map[string][]string)
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "group "):
			in = strings.HasPrefix(line, "group "+group+" ")
		case in && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "  SENTINEL"):
			cells := cellSep.Split(strings.TrimSpace(line), -1)
			if len(cells) > 1 {
				rows[cells[0]] = cells[1:]
			}
		}
	}
	return rows
}

var cellSep = regexp.MustCompile(`\s{2,}`)

func TestCheckInvalidConfigExits2(t *testing.T) {
	dir := t.TempDir()
	unknownKey := filepath.Join(dir, "unknown-key.yaml")
	if err := os.WriteFile(unknownKey, []byte("sentinels: [127.0.0.1:26379]\nhold_timout: 5s\ngroups: [{master_name: m, listen: \"127.0.0.1:0\"}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{name: "unknown key", args: []string{"--config", unknownKey}, want: `unknown key "hold_timout" (did you mean "hold_timeout"?)`},
		{name: "no sentinels", args: []string{"--master-name", "m", "--listen", "127.0.0.1:0"}, want: "sentinels: none given"},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "nope.yaml")}, want: "read config file"},
		{name: "bad flag", args: []string{"--no-such-flag"}, want: "unknown flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"check"}, tt.args...), &stdout, &stderr, noEnv)
			if code := exitCode(err, &stderr); code != 2 {
				t.Fatalf("exit code %d (err %v), want 2", code, err)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout not empty: %q", stdout.String())
			}
		})
	}
}

func TestCheckHelp(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"check", "--help"}, &stdout, &bytes.Buffer{}, noEnv); err != nil {
		t.Fatalf("check --help: %v", err)
	}
	for _, want := range []string{"sentinel-proxy check --config FILE", "--sentinel-password", "--backend-password"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("check --help lacks %q", want)
		}
	}
}

// unusedAddr returns a loopback address nothing listens on.
func unusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestCheckGroupProblems covers what only several sentinels' answers show, on
// synthetic reports.
func TestCheckGroupProblems(t *testing.T) {
	rep := func(s, addr string, epoch int64, others int) sentinel.Report {
		return sentinel.Report{Sentinel: s, Addr: addr, Epoch: epoch, Quorum: 2, OtherSentinels: others, Flags: "master"}
	}
	down := sentinel.Report{Sentinel: "s3", Err: errors.New("dial tcp: connection refused")}
	unknown := sentinel.Report{Sentinel: "s3", Unknown: true}
	tests := []struct {
		name    string
		reports []sentinel.Report
		want    []string // each in one problem, in order; nil = no problem
	}{
		{name: "agree", reports: []sentinel.Report{rep("s1", "a:1", 3, 2), rep("s2", "a:1", 3, 2), rep("s3", "a:1", 3, 2)}},
		{name: "one down of three", reports: []sentinel.Report{rep("s1", "a:1", 3, 2), rep("s2", "a:1", 3, 2), down}},
		{name: "disagree on master and epoch", reports: []sentinel.Report{rep("s1", "a:1", 3, 2), rep("s2", "b:1", 4, 2), rep("s3", "b:1", 4, 2)},
			want: []string{"sentinels disagree on the master: a:1 (s1); b:1 (s2, s3)", "sentinels disagree on the config epoch: 3 (s1); 4 (s2, s3)"}},
		{name: "disagree on epoch only", reports: []sentinel.Report{rep("s1", "a:1", 3, 2), rep("s2", "a:1", 4, 2)},
			want: []string{"disagree on the config epoch: 3 (s1); 4 (s2)"}},
		{name: "below quorum and majority", reports: []sentinel.Report{rep("s1", "a:1", 3, 2), down},
			want: []string{"only 1 sentinel(s) answer, fewer than the quorum 2", "only 1 of 3 sentinels answer: a failover needs a majority of 2"}},
		{name: "nobody answers", reports: []sentinel.Report{down, down},
			want: []string{"no reachable sentinel (2 configured)"}},
		{name: "nobody knows the name", reports: []sentinel.Report{unknown, down},
			want: []string{`no sentinel monitors a master named "m"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var answered []sentinel.Report
			reachable := 0
			for _, r := range tt.reports {
				if r.Err == nil {
					reachable++
					if !r.Unknown {
						answered = append(answered, r)
					}
				}
			}
			got := groupProblems("m", tt.reports, answered, reachable)
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %q lacks %q", got[i], w)
				}
			}
		})
	}
}

func TestCheckReplicaCell(t *testing.T) {
	up := sentinel.ReplicaReport{Addr: "r1:1", Flags: "slave", Up: true}
	tests := []struct {
		name      string
		report    sentinel.Report
		wantCell  string
		wantProbs []string
	}{
		{name: "healthy", report: sentinel.Report{Flags: "master", OtherSentinels: 2, Replicas: []sentinel.ReplicaReport{up, up}},
			wantCell: "2/2"},
		{name: "replica down", report: sentinel.Report{Flags: "master", OtherSentinels: 2,
			Replicas: []sentinel.ReplicaReport{up, {Addr: "r2:1", Flags: "s_down,slave,disconnected"}}},
			wantCell: "1/2", wantProbs: []string{"1 replica(s) down: r2:1 (s_down,slave,disconnected)"}},
		{name: "master down, failing over", report: sentinel.Report{Flags: "o_down,master,failover_in_progress", FailoverState: "wait_promotion", OtherSentinels: 2,
			Replicas: []sentinel.ReplicaReport{up}},
			wantCell: "1/1", wantProbs: []string{"sees the master down (flags o_down,master,failover_in_progress)", "failover in progress (state wait_promotion)"}},
		{name: "isolated, no replicas", report: sentinel.Report{Flags: "master"},
			wantCell: "0/0", wantProbs: []string{"knows 0 other sentinel(s); the config lists 3 sentinels", "no replicas"}},
		{name: "replicas unknown", report: sentinel.Report{Flags: "master", OtherSentinels: 2, ReplicasErr: errors.New("sentinel replicas: NOPERM")},
			wantCell: "?", wantProbs: []string{"sentinel replicas: NOPERM"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cell, probs := replicaCell(tt.report, 3)
			if cell != tt.wantCell {
				t.Errorf("cell %q, want %q", cell, tt.wantCell)
			}
			if len(probs) != len(tt.wantProbs) {
				t.Fatalf("problems %q, want %q", probs, tt.wantProbs)
			}
			for i, w := range tt.wantProbs {
				if !strings.HasPrefix(probs[i], w) {
					t.Errorf("problem %q, want %q", probs[i], w)
				}
			}
		})
	}
}
