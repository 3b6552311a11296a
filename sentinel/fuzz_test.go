package sentinel

import (
	"net"
	"strings"
	"testing"
	"unicode"
)

// FuzzParseEvent throws arbitrary channels and payloads (what any peer on a
// sentinel's Pub/Sub could publish) at the event parser. It must never
// panic, and:
//   - the name we watch only decides ours, nothing else;
//   - a payload naming another master is never ours, one naming ours is;
//   - every address it returns reassembles from the payload's ip and port
//     fields (the emitting sentinel's host standing in for 0.0.0.0/::/""),
//     and none is returned for a port that is not 1-65535;
//   - +switch-master is always a promotion trigger with no master/node;
//   - how the payload's fields are spaced does not matter.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []struct{ channel, payload string }{
		{"+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 6380"},
		{"+switch-master", "other 10.0.0.1 6379 10.0.0.2 6380"},
		{"+switch-master", "mymaster 0.0.0.0 6379 0.0.0.0 6380"},
		{"+switch-master", "mymaster ::1 6379 ::2 6380"},
		{"+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2"},
		{"+switch-master", "mymaster 10.0.0.1 6379 10.0.0.2 0"},
		{"+sdown", "master mymaster 10.0.0.1 6379"},
		{"+sdown", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379"},
		{"+odown", "master mymaster 10.0.0.1 6379 #quorum 2/2"},
		{"-odown", "master mymaster 10.0.0.1 6379"},
		{"+try-failover", "master mymaster 10.0.0.1 6379"},
		{"+elected-leader", "master mymaster 10.0.0.1 6379"},
		{"+failover-state-select-slave", "master mymaster 10.0.0.1 6379"},
		{"+selected-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379"},
		{"+failover-state-send-slaveof-noone", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379"},
		{"+failover-state-wait-promotion", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379"},
		{"+promoted-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379"},
		{"+failover-state-reconf-slaves", "master mymaster 10.0.0.1 6379"},
		{"-failover-abort-not-elected", "master mymaster 10.0.0.1 6379"},
		{"+config-update-from", "sentinel 4c36a8cd 10.0.0.9 26380 @ mymaster 10.0.0.1 6379"},
		{"+sentinel", "sentinel 4c36a8cd 10.0.0.9 26380 @ other 10.0.0.1 6379"},
		{"+slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1"},
		{"+odown", "master mymaster redis-a.example 6379 #quorum 2/2"},
		{"+odown", "master mymaster 10.0.0.1 65536"},
		{"+odown", "master mymaster 10.0.0.1 +80"},
		{"+odown", "master mymaster [::1] 6379"},
		{"+odown", "master\tmymaster\n10.0.0.1\u00a06379"},
		{"+new-epoch", "7"},
		{"+vote-for-leader", "4c36a8cd 7"},
		{"+tilt", "#tilt mode entered"},
		{"+odown", ""},
		{"", "master"},
		{"+odown", "master mymaster"},
		{"\x00", "slave \xff \xfe 1 @ \x00 a 1"},
	} {
		f.Add(s.channel, s.payload, "mymaster", "s.host")
	}
	f.Add("+odown", "master mymaster :: 6379", "mymaster", "fe80::1")
	f.Add("+odown", "master mymaster 0.0.0.0 6379", "mymaster", "")
	f.Fuzz(func(t *testing.T, channel, payload, name, selfHost string) {
		if name == "" || strings.IndexFunc(name, unicode.IsSpace) >= 0 {
			t.Skip() // New refuses such master names
		}
		ev := parseEvent(channel, payload, name, selfHost)
		if ev.Channel != channel || ev.Payload != payload {
			t.Fatalf("event %q %q does not keep channel %q and payload %q", ev.Channel, ev.Payload, channel, payload)
		}
		if ev.kind < evOther || ev.kind > evPromote {
			t.Fatalf("kind %d out of range", ev.kind)
		}

		// The name decides ours, nothing else.
		other := parseEvent(channel, payload, name+"x", selfHost)
		if other.kind != ev.kind || other.master != ev.master || other.node != ev.node || other.newAddr != ev.newAddr {
			t.Fatalf("the watched name changed more than ours: %+v vs %+v", ev, other)
		}

		// Spacing does not matter.
		f := strings.Fields(payload)
		norm := parseEvent(channel, " "+strings.Join(f, "  ")+"\t", name, selfHost)
		norm.Payload = payload
		if norm != ev {
			t.Fatalf("respaced payload parses to %+v, want %+v", norm, ev)
		}

		want := expectEvent(channel, f, name)
		if ev.ours != want.ours {
			t.Fatalf("ours = %v, want %v (name field %q, watching %q)", ev.ours, want.ours, want.nameField, name)
		}
		if want.nameField != "" {
			// Watching the master the payload names makes it ours.
			if !parseEvent(channel, payload, want.nameField, selfHost).ours {
				t.Fatalf("not ours when watching %q, the master it names", want.nameField)
			}
		}
		checkAddr(t, "master", ev.master, want.master, selfHost)
		checkAddr(t, "node", ev.node, want.node, selfHost)
		checkAddr(t, "newAddr", ev.newAddr, want.newAddr, selfHost)
		if channel == "+switch-master" && ev.kind != evPromote {
			t.Fatalf("+switch-master kind %d, want evPromote", ev.kind)
		}
	})
}

// wantEvent is what FuzzParseEvent expects, worked out independently of
// parseEvent from the payload's fields.
type wantEvent struct {
	ours      bool
	nameField string     // the master name the payload carries; "" if none
	master    *[2]string // ip and port fields; nil: the event carries none
	node      *[2]string
	newAddr   *[2]string
}

func expectEvent(channel string, f []string, name string) wantEvent {
	var w wantEvent
	switch {
	case channel == "+switch-master":
		if len(f) >= 5 {
			w.nameField = f[0]
			w.newAddr = &[2]string{f[3], f[4]}
		}
		w.ours = w.nameField != "" && w.nameField == name // short: ignored
		return w
	case len(f) >= 4 && f[0] == "master":
		w.nameField = f[1]
		w.master = &[2]string{f[2], f[3]}
		w.node = w.master
	case len(f) >= 8 && (f[0] == "slave" || f[0] == "sentinel") && f[4] == "@":
		w.nameField = f[5]
		w.master = &[2]string{f[6], f[7]}
		w.node = &[2]string{f[2], f[3]}
	default:
		w.ours = true // no name we can read: may concern us
		return w
	}
	w.ours = w.nameField == name
	return w
}

// checkAddr asserts that got reassembles from the payload's ip and port
// fields (want), or is "" when want is nil or its port is not 1-65535.
func checkAddr(t *testing.T, what, got string, want *[2]string, selfHost string) {
	t.Helper()
	if want == nil {
		if got != "" {
			t.Fatalf("%s = %q, but the payload carries no such address", what, got)
		}
		return
	}
	ip, port := want[0], want[1]
	if !validPort(port) {
		if got != "" {
			t.Fatalf("%s = %q from port field %q", what, got, port)
		}
		return
	}
	host := ip
	if p := net.ParseIP(ip); ip == "" || (p != nil && p.IsUnspecified()) {
		host = selfHost
	}
	if got == "" {
		t.Fatalf("%s empty for ip %q port %q", what, ip, port)
	}
	if !strings.HasSuffix(got, ":"+port) {
		t.Fatalf("%s = %q does not end in port %q", what, got, port)
	}
	if strings.ContainsAny(host, "[]") {
		return // not an address Sentinel sends; no round trip to check
	}
	h, p, err := net.SplitHostPort(got)
	if err != nil || h != host || p != port {
		t.Fatalf("%s = %q splits into %q %q (%v), want %q %q", what, got, h, p, err, host, port)
	}
}

// validPort mirrors what nodeAddr accepts, written without strconv: an
// optional plus sign, decimal digits (leading zeros allowed), 1-65535.
func validPort(s string) bool {
	d := strings.TrimPrefix(s, "+")
	if d == "" || strings.IndexFunc(d, func(c rune) bool { return c < '0' || c > '9' }) >= 0 {
		return false
	}
	d = strings.TrimLeft(d, "0")
	if d == "" || len(d) > 5 {
		return false
	}
	n := 0
	for _, c := range d {
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}
