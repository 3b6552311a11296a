package sentinel

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
)

func TestAuth(t *testing.T) {
	const sentPass, dataPass = "s3ntinel-pw", "d4ta-pw"
	tests := []struct {
		name               string
		sentUser, sentPass string // required by the sentinels
		resp3              bool   // sentinels accept HELLO 3 [AUTH]
		nodePass           string // required by the data node
		opts               func(o *Options)
		wantMaster         bool
		wantSentErr        string // in every SentinelStatus.LastErr
		wantLog            string // a log message containing this
	}{
		{name: "password", sentPass: sentPass, nodePass: dataPass, wantMaster: true,
			opts: func(o *Options) { o.Password, o.DataPassword = sentPass, dataPass }},
		{name: "acl users", sentUser: "proxy", sentPass: sentPass, nodePass: dataPass, wantMaster: true,
			opts: func(o *Options) {
				o.Username, o.Password, o.DataPassword = "proxy", sentPass, dataPass
			}},
		{name: "acl via HELLO 3 AUTH", sentUser: "proxy", sentPass: sentPass, resp3: true, wantMaster: true,
			opts: func(o *Options) { o.Username, o.Password = "proxy", sentPass }},
		{name: "wrong sentinel password", sentPass: sentPass, wantSentErr: "WRONGPASS",
			opts: func(o *Options) { o.Password = "nope" }},
		{name: "no sentinel password", sentPass: sentPass, wantSentErr: "NOAUTH",
			opts: func(o *Options) {}},
		{name: "data node needs a password", nodePass: dataPass,
			opts: func(o *Options) {}, wantLog: "set --backend-password"},
		{name: "wrong data password", nodePass: dataPass,
			opts: func(o *Options) { o.DataPassword = "nope" }, wantLog: "WRONGPASS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newFakeNode(t, lo, "master", func(n *fakeNode) { n.pass = tt.nodePass })
			sent := func(f *fakeSentinel) { f.user, f.pass, f.resp3 = tt.sentUser, tt.sentPass, tt.resp3 }
			s1 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1}, sent)
			s2 := newFakeSentinel(t, lo, sentView{addr: a.addr, epoch: 1}, sent)
			opts := fastOpts(addrs(s1, s2)...)
			tt.opts(&opts)
			r := startWatcher(t, opts, nil)
			switch {
			case tt.wantMaster:
				waitMaster(t, r.w, a.addr, 5*time.Second)
				eventually(t, 5*time.Second, "subscriptions", func() bool { return allSubscribed(r.w) })
			case tt.wantSentErr != "":
				eventually(t, 5*time.Second, "blind", func() bool { return r.w.Status().Blind })
				for _, s := range r.w.Status().Sentinels {
					if !strings.Contains(s.LastErr, tt.wantSentErr) {
						t.Errorf("sentinel %s error %q, want %q", s.Addr, s.LastErr, tt.wantSentErr)
					}
				}
			default:
				eventually(t, 5*time.Second, "ROLE failure logged", func() bool {
					return logsContain(r.logs, "cannot verify ROLE on "+a.addr+": ") && logsContain(r.logs, tt.wantLog)
				})
				if addr, _ := r.w.Master(); addr != "" {
					t.Errorf("Master() = %q without a ROLE check", addr)
				}
			}
			r.stop()
			noSecrets(t, r.logs, r.w.Status(), sentPass, dataPass)
		})
	}
}

// noSecrets fails if a password appears in a log entry or the status.
func noSecrets(t *testing.T, logs *observer.ObservedLogs, st Status, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		text := e.Message
		for k, v := range e.ContextMap() {
			text += " " + k + "=" + fmt.Sprint(v)
		}
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("log leaks a password: %s", text)
			}
		}
	}
	for _, s := range secrets {
		for _, ss := range st.Sentinels {
			if strings.Contains(ss.LastErr, s) {
				t.Errorf("status leaks a password: %q", ss.LastErr)
			}
		}
		if strings.Contains(st.Error, s) {
			t.Errorf("status leaks a password: %q", st.Error)
		}
	}
}

func TestIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	_ = ln.Close()
	a := newFakeNode(t, "[::1]:0", "master")
	s1 := newFakeSentinel(t, "[::1]:0", sentView{addr: a.addr, epoch: 1})
	if !strings.HasPrefix(s1.addr, "[::1]:") {
		t.Fatalf("fake sentinel at %s", s1.addr)
	}
	r := startWatcher(t, fastOpts(s1.addr), nil)
	waitMaster(t, r.w, a.addr, 5*time.Second) // "[::1]:port", from ip "::1" and the port
	eventually(t, 5*time.Second, "subscribed", func() bool { return allSubscribed(r.w) })
}

// A sentinel configured by hostname reports the master as 0.0.0.0: the
// master is on the sentinel's host, so it is published as localhost:port.
func TestHostnameAndPlaceholderAddress(t *testing.T) {
	a := newFakeNode(t, lo, "master")
	_, port, _ := net.SplitHostPort(a.addr)
	s1 := newFakeSentinel(t, lo, sentView{addr: net.JoinHostPort("0.0.0.0", port), epoch: 1})
	_, sp, _ := net.SplitHostPort(s1.addr)
	r := startWatcher(t, fastOpts("localhost:"+sp), nil)
	waitMaster(t, r.w, "localhost:"+port, 5*time.Second)
	if st := r.w.Status(); st.Sentinels[0].MasterAddr != "localhost:"+port {
		t.Errorf("status = %+v", st.Sentinels[0])
	}
}
