package topology

import (
	"slices"
	"strings"
	"testing"
)

// TestParseClusterNodes checks the CLUSTER NODES lines the cluster checks
// read: flags, masters, slot ranges, migration markers, hostnames.
func TestParseClusterNodes(t *testing.T) {
	reply := strings.Join([]string{
		"aaa 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-99 101 [100->-bbb]",
		"bbb 127.0.0.1:7002@17002,host-b master - 0 1700000000000 2 connected 102-16383 [100-<-aaa]",
		"ccc 127.0.0.1:7003@17003 slave,fail aaa 1700000000000 0 1 disconnected",
		"ddd :0@0 master,noaddr - 0 0 0 disconnected",
	}, "\n") + "\n"
	v, err := parseClusterNodes(reply)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if len(v) != 4 {
		t.Fatalf("%d entries, want 4", len(v))
	}
	a, b, c := v[0], v[1], v[2]
	if a.id != "aaa" || a.port != 7001 || !a.flags["myself"] || !a.flags["master"] || a.master != "" ||
		!slices.Equal(a.slots, [][2]int{{0, 99}, {101, 101}}) || !slices.Equal(a.open, []string{"[100->-bbb]"}) {
		t.Errorf("aaa = %+v", a)
	}
	if b.port != 7002 || !slices.Equal(b.slots, [][2]int{{102, 16383}}) || len(b.open) != 1 {
		t.Errorf("bbb = %+v", b)
	}
	if !c.flags["slave"] || !c.flags["fail"] || c.master != "aaa" || c.link != "disconnected" || len(c.slots) != 0 {
		t.Errorf("ccc = %+v", c)
	}
	if got := canonical(v); !strings.Contains(got, "ccc replica-of-aaa []") || !strings.Contains(got, "aaa master [[0 99] [101 101]]") {
		t.Errorf("canonical = %q", got)
	}
	for _, bad := range []string{"aaa 127.0.0.1:1@2 master", "aaa 127.0.0.1:1@2 master - 0 0 1 connected 9-1"} {
		if _, err := parseClusterNodes(bad); err == nil {
			t.Errorf("parse(%q) succeeded, want an error", bad)
		}
	}
}
