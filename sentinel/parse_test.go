package sentinel

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewValidatesOptions(t *testing.T) {
	ok := Options{MasterName: "mymaster", Sentinels: []string{"127.0.0.1:26379"}}
	tests := []struct {
		name    string
		mod     func(o *Options)
		wantErr []string // substrings; nil = valid
	}{
		{"valid", func(*Options) {}, nil},
		{"hostname and ipv6", func(o *Options) { o.Sentinels = []string{"redis-s1.example:26379", "[::1]:26380"} }, nil},
		{"empty name", func(o *Options) { o.MasterName = "" }, []string{"master name is empty"}},
		{"name with space", func(o *Options) { o.MasterName = "my master" }, []string{"whitespace"}},
		{"no sentinels", func(o *Options) { o.Sentinels = nil }, []string{"no sentinel addresses"}},
		{"missing port", func(o *Options) { o.Sentinels = []string{"127.0.0.1"} }, []string{`"127.0.0.1"`}},
		{"bad port", func(o *Options) { o.Sentinels = []string{"h:0", "h:x"} }, []string{`"h:0": bad port`, `"h:x": bad port`}},
		{"unbracketed ipv6", func(o *Options) { o.Sentinels = []string{"::1:26379"} }, []string{"::1:26379"}},
		{"negative durations", func(o *Options) { o.PollInterval, o.QueryTimeout, o.DialTimeout = -1, -1, -1 },
			[]string{"poll interval", "query timeout", "dial timeout"}},
		{"all at once", func(o *Options) { o.MasterName, o.Sentinels = "", nil }, []string{"master name is empty", "no sentinel addresses"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mod(&o)
			w, err := New(o, nil)
			if tt.wantErr == nil {
				if err != nil || w == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New succeeded, want errors %q", tt.wantErr)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestNewAppliesDefaultsAndNormalises(t *testing.T) {
	w, err := New(Options{MasterName: "m", Sentinels: []string{"[::1]:1", "[0:0::1]:1", "a:2"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.opts.PollInterval != time.Second || w.opts.QueryTimeout != 500*time.Millisecond || w.opts.DialTimeout != time.Second {
		t.Errorf("defaults not applied: %+v", w.opts)
	}
	if got := strings.Join(w.opts.Sentinels, ","); got != "[::1]:1,[0:0::1]:1,a:2" {
		t.Errorf("sentinels = %s", got)
	}
	if addr, ch := w.Master(); addr != "" || ch == nil {
		t.Errorf("Master() before Run = %q, %v; want \"\" and a channel", addr, ch)
	}
}

func TestNodeAddr(t *testing.T) {
	tests := []struct {
		ip, port, self, want string
		ok                   bool
	}{
		{"10.0.0.5", "6379", "s1", "10.0.0.5:6379", true},
		{"redis-1.example", "6379", "s1", "redis-1.example:6379", true},
		{"::1", "6379", "s1", "[::1]:6379", true},
		{"0.0.0.0", "6379", "10.0.0.9", "10.0.0.9:6379", true}, // the placeholder: the sentinel's own host
		{"::", "6379", "fe80::1", "[fe80::1]:6379", true},
		{"", "6379", "localhost", "localhost:6379", true},
		{"10.0.0.5", "0", "s1", "", false},
		{"10.0.0.5", "x", "s1", "", false},
	}
	for _, tt := range tests {
		got, ok := nodeAddr(tt.ip, tt.port, tt.self)
		if got != tt.want || ok != tt.ok {
			t.Errorf("nodeAddr(%q,%q,%q) = %q,%v; want %q,%v", tt.ip, tt.port, tt.self, got, ok, tt.want, tt.ok)
		}
	}
}

func TestChoose(t *testing.T) {
	v := func(addr string, epoch int64) answer { return answer{addr: addr, epoch: epoch} }
	tests := []struct {
		name   string
		views  []answer
		prefer string
		want   choice
	}{
		{"single", []answer{v("a:1", 0)}, "", choice{"a:1", 0, 1}},
		{"highest epoch beats majority", []answer{v("a:1", 1), v("a:1", 1), v("b:1", 2)}, "a:1", choice{"b:1", 2, 1}},
		{"tie broken by votes", []answer{v("a:1", 3), v("b:1", 3), v("b:1", 3)}, "a:1", choice{"b:1", 3, 2}},
		{"equal votes prefer current", []answer{v("b:1", 3), v("a:1", 3)}, "b:1", choice{"b:1", 3, 1}},
		{"equal votes no current: smallest", []answer{v("c:1", 3), v("b:1", 3)}, "x:1", choice{"b:1", 3, 1}},
		{"lower epochs ignored", []answer{v("a:1", 5), v("b:1", 4), v("b:1", 4), v("b:1", 4)}, "b:1", choice{"a:1", 5, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := choose(tt.views, tt.prefer); got != tt.want {
				t.Errorf("choose = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAnswerFailing(t *testing.T) {
	a := func(flags, state, addr, info string) answer {
		return answer{addr: addr, infoAddr: info, flags: flags, state: state}
	}
	tests := []struct {
		name string
		a    answer
		want bool
	}{
		{"healthy", a("master", "", "A:1", "A:1"), false},
		{"s_down only", a("master,s_down", "", "A:1", "A:1"), false},
		{"o_down", a("master,s_down,o_down", "", "A:1", "A:1"), true},
		{"failover waiting start", a("master,failover_in_progress", "wait_start", "A:1", "A:1"), true},
		{"failover waiting promotion", a("master,failover_in_progress", "wait_promotion", "A:1", "A:1"), true},
		{"leader after promotion (trap)", a("master,failover_in_progress", "reconf_slaves", "B:1", "A:1"), false},
		{"o_down on leader after promotion", a("master,o_down,failover_in_progress", "reconf_slaves", "B:1", "A:1"), false},
		{"update_config", a("master,failover_in_progress", "update_config", "A:1", "A:1"), false},
		// MASTER read before the promotion, GET-MASTER-ADDR after it.
		{"promotion between the two reads", a("master,failover_in_progress", "wait_promotion", "B:1", "A:1"), true},
		{"error", answer{err: errTest, flags: "o_down"}, false},
	}
	for _, tt := range tests {
		if got := tt.a.failing(); got != tt.want {
			t.Errorf("%s: failing() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

var errTest = errors.New("test error")

func TestParseEvent(t *testing.T) {
	tests := []struct {
		channel, payload string
		ours             bool
		kind             eventKind
		master, newAddr  string
	}{
		{"+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6380", true, evPromote, "", "10.0.0.2:6380"},
		{"+switch-master", "other 10.0.0.1 6379 10.0.0.2 6380", false, evPromote, "", "10.0.0.2:6380"},
		{"+switch-master", "mymaster 0.0.0.0 6379 0.0.0.0 6380", true, evPromote, "", "s.host:6380"},
		{"+switch-master", "mymaster ::1 6379 ::2 6380", true, evPromote, "", "[::2]:6380"},
		{"+odown", "master mymaster 10.0.0.1 6379 #quorum 2/2", true, evStart, "10.0.0.1:6379", ""},
		{"+odown", "master other 10.0.0.1 6379 #quorum 2/2", false, evStart, "10.0.0.1:6379", ""},
		{"+sdown", "master mymaster 10.0.0.1 6379", true, evOther, "10.0.0.1:6379", ""},
		{"+sdown", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379", true, evOther, "10.0.0.1:6379", ""},
		{"+try-failover", "master mymaster 10.0.0.1 6379", true, evStart, "10.0.0.1:6379", ""},
		{"+elected-leader", "master mymaster 10.0.0.1 6379", true, evStart, "10.0.0.1:6379", ""},
		{"+failover-state-select-slave", "master mymaster 10.0.0.1 6379", true, evStart, "10.0.0.1:6379", ""},
		{"+selected-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379", true, evStart, "10.0.0.1:6379", ""},
		{"+failover-state-send-slaveof-noone", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379", true, evStart, "10.0.0.1:6379", ""},
		{"+failover-state-wait-promotion", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379", true, evStart, "10.0.0.1:6379", ""},
		{"+promoted-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379", true, evPromote, "10.0.0.1:6379", ""},
		{"+failover-state-reconf-slaves", "master mymaster 10.0.0.1 6379", true, evPromote, "10.0.0.1:6379", ""},
		{"-failover-abort-not-elected", "master mymaster 10.0.0.1 6379", true, evAbort, "10.0.0.1:6379", ""},
		{"-failover-abort-no-good-slave", "master mymaster 10.0.0.1 6379", true, evAbort, "10.0.0.1:6379", ""},
		{"-odown", "master mymaster 10.0.0.1 6379", true, evAbort, "10.0.0.1:6379", ""},
		{"+config-update-from", "sentinel 4c36a8cd 10.0.0.9 26380 @ mymaster 10.0.0.1 6379", true, evPromote, "10.0.0.1:6379", ""},
		{"+sentinel", "sentinel 4c36a8cd 10.0.0.9 26380 @ other 10.0.0.1 6379", false, evOther, "10.0.0.1:6379", ""},
		{"+odown", "master mymaster 0.0.0.0 6379 #quorum 2/2", true, evStart, "s.host:6379", ""},
		{"+odown", "master mymaster redis-a.example 6379 #quorum 2/2", true, evStart, "redis-a.example:6379", ""},
		{"+new-epoch", "7", true, evOther, "", ""},
		{"+vote-for-leader", "4c36a8cd 7", true, evOther, "", ""},
		{"+tilt", "#tilt mode entered", true, evOther, "", ""},
		{"+odown", "", true, evOther, "", ""},
	}
	for _, tt := range tests {
		ev := parseEvent(tt.channel, tt.payload, "mymaster", "s.host")
		if ev.ours != tt.ours || ev.kind != tt.kind || ev.master != tt.master || ev.newAddr != tt.newAddr {
			t.Errorf("parseEvent(%q, %q) = ours %v kind %v master %q new %q; want %v %v %q %q",
				tt.channel, tt.payload, ev.ours, ev.kind, ev.master, ev.newAddr, tt.ours, tt.kind, tt.master, tt.newAddr)
		}
	}
}
