package sentinel

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestInspect(t *testing.T) {
	const pass = "s3ntinel-pw"
	node := newFakeNode(t, lo, "master")
	good := newFakeSentinel(t, lo, sentView{addr: node.addr, epoch: 7, flags: "master"})
	unknown := newFakeSentinel(t, lo, sentView{unknown: true})
	// A sentinel that reports the master as 0.0.0.0: its own host is meant.
	_, port, _ := net.SplitHostPort(node.addr)
	placeholder := newFakeSentinel(t, lo, sentView{addr: net.JoinHostPort("0.0.0.0", port), epoch: 7})
	locked := newFakeSentinel(t, lo, sentView{addr: node.addr, epoch: 7}, func(f *fakeSentinel) { f.pass = pass })
	dead := deadAddr(t)

	tests := []struct {
		name        string
		sentinel    string
		password    string
		wantErr     string // prefix of the redis error, or "" for no error
		transport   bool   // want a non-redis error
		wantAddr    string
		wantUnknown bool
	}{
		{name: "answers", sentinel: good.addr, wantAddr: node.addr},
		{name: "unknown master name", sentinel: unknown.addr, wantUnknown: true},
		{name: "0.0.0.0 is the sentinel's host", sentinel: placeholder.addr, wantAddr: node.addr},
		{name: "right password", sentinel: locked.addr, password: pass, wantAddr: node.addr},
		{name: "wrong password", sentinel: locked.addr, password: "nope", wantErr: "WRONGPASS"},
		{name: "no password", sentinel: locked.addr, wantErr: "NOAUTH"},
		{name: "unreachable", sentinel: dead, transport: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fastOpts(tt.sentinel)
			o.Password = tt.password
			reps, err := Inspect(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if len(reps) != 1 {
				t.Fatalf("%d reports, want 1", len(reps))
			}
			r := reps[0]
			switch {
			case tt.transport:
				var rerr redis.Error
				if r.Err == nil || errors.As(r.Err, &rerr) {
					t.Fatalf("err = %v, want a transport error", r.Err)
				}
			case tt.wantErr != "":
				if !redis.HasErrorPrefix(r.Err, tt.wantErr) {
					t.Fatalf("err = %v, want %s", r.Err, tt.wantErr)
				}
			case r.Err != nil:
				t.Fatalf("err = %v", r.Err)
			}
			if r.Unknown != tt.wantUnknown {
				t.Errorf("unknown = %v, want %v", r.Unknown, tt.wantUnknown)
			}
			if r.Addr != tt.wantAddr {
				t.Errorf("addr = %q, want %q", r.Addr, tt.wantAddr)
			}
			if tt.wantAddr != "" {
				if r.Epoch != 7 || r.Quorum != 2 || !r.HasFlag("master") {
					t.Errorf("epoch %d quorum %d flags %q, want 7, 2, master", r.Epoch, r.Quorum, r.Flags)
				}
				if r.ReplicasErr != nil || len(r.Replicas) != 1 || !r.Replicas[0].Up {
					t.Errorf("replicas %+v (%v), want one up", r.Replicas, r.ReplicasErr)
				}
			}
		})
	}
}

func TestInspectRejectsBadOptions(t *testing.T) {
	if _, err := Inspect(context.Background(), Options{}); err == nil {
		t.Fatal("Inspect accepted empty options")
	}
}

func TestCheckRole(t *testing.T) {
	const pass = "d4ta-pw"
	master := newFakeNode(t, lo, "master")
	replica := newFakeNode(t, lo, "slave")
	locked := newFakeNode(t, lo, "master", func(n *fakeNode) { n.pass = pass })
	tests := []struct {
		name     string
		addr     string
		password string
		wantRole string
		wantErr  string
	}{
		{name: "master", addr: master.addr, wantRole: "master"},
		{name: "replica", addr: replica.addr, wantRole: "slave"},
		{name: "password", addr: locked.addr, password: pass, wantRole: "master"},
		{name: "needs a password", addr: locked.addr, wantErr: "NOAUTH"},
		{name: "wrong password", addr: locked.addr, password: "nope", wantErr: "WRONGPASS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := fastOpts("127.0.0.1:1")
			o.DataPassword = tt.password
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			role, err := CheckRole(ctx, o, tt.addr)
			if tt.wantErr != "" {
				if !redis.HasErrorPrefix(err, tt.wantErr) {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || role != tt.wantRole {
				t.Fatalf("role = %q, %v; want %q", role, err, tt.wantRole)
			}
		})
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", lo)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
