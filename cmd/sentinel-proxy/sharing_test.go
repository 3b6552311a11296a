package main

import (
	"testing"

	"github.com/sentinel-proxy/sentinel-proxy/config"
)

// TestSharedConns: sharing is on by default (one shared connection per
// connection state), shared_connections sets the count or turns it off, and
// a group's sharing setting overrides both ways.
func TestSharedConns(t *testing.T) {
	cases := []struct {
		shared  int
		sharing string
		want    int // > 0: on with that many; <= 0: off
	}{
		{config.Default().SharedConnections, "", 1},
		{3, "", 3},
		{0, "", -1},
		{3, "off", -1},
		{0, "on", 1},
		{2, "on", 2},
	}
	for _, tc := range cases {
		cfg := config.Default()
		cfg.SharedConnections = tc.shared
		got := sharedConns(cfg, config.Group{Sharing: tc.sharing})
		if got > 0 != (tc.want > 0) || tc.want > 0 && got != tc.want {
			t.Errorf("shared_connections %d, sharing %q: SharedConns = %d, want %d", tc.shared, tc.sharing, got, tc.want)
		}
	}
}
