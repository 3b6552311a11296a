package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// valid returns a configuration that passes Validate, changed by fn.
func valid(fn func(*Config)) Config {
	return with(func(c *Config) {
		c.Sentinels = []string{"10.0.0.1:26379"}
		c.Groups = []Group{{MasterName: "mymaster", Listen: "127.0.0.1:6380"}}
		fn(c)
	})
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*Config)
	}{
		{"minimal", func(*Config) {}},
		{"ipv6 and host names", func(c *Config) {
			c.Sentinels = []string{"[::1]:26379", "[fe80::1%eth0]:26379", "sentinel-1.example.com:26379", "redis_sentinel_1:26379", "localhost.:1"}
		}},
		{"cluster group without sentinels", func(c *Config) {
			c.Sentinels = nil
			c.Groups = []Group{{ClusterNodes: []string{"10.0.1.1:7000", "[::1]:7001", "redis-node-3:7000"}, Listen: ":6380"}}
		}},
		{"sentinel and named cluster groups", func(c *Config) {
			c.Groups = append(c.Groups,
				Group{Name: "shop", ClusterNodes: []string{"10.0.1.1:7000"}, Listen: ":6381"},
				Group{ClusterNodes: []string{"10.0.2.1:7000"}, Listen: ":6382"})
		}},
		{"wildcard and ipv6 listen", func(c *Config) {
			c.Groups = []Group{{MasterName: "a", Listen: ":6380"}, {MasterName: "b", Listen: "[::1]:6381"}, {MasterName: "c", Listen: "0.0.0.0:6382"}}
		}},
		{"port 0 twice (tests)", func(c *Config) {
			c.Groups = []Group{{MasterName: "a", Listen: "127.0.0.1:0"}, {MasterName: "b", Listen: "127.0.0.1:0"}}
			c.Admin = "127.0.0.1:0"
		}},
		{"same port on different hosts", func(c *Config) {
			c.Groups = []Group{{MasterName: "a", Listen: "127.0.0.1:6380"}, {MasterName: "b", Listen: "127.0.0.2:6380"}}
		}},
		{"zero hold and drain", func(c *Config) { c.HoldTimeout, c.DrainTimeout = 0, 0 }},
		{"every log level and format", func(c *Config) { c.LogLevel, c.LogFormat = "warn", "json" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := valid(tt.fn).Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name string
		fn   func(*Config)
		want string
	}{
		{"no sentinels", func(c *Config) { c.Sentinels = nil }, "sentinels: none given"},
		{"sentinel without port", func(c *Config) { c.Sentinels = []string{"10.0.0.1"} }, `sentinels[0]: "10.0.0.1": missing port in address`},
		{"sentinel port 0", func(c *Config) { c.Sentinels = []string{"10.0.0.1:0"} }, "port 0 is not a valid destination"},
		{"sentinel port too big", func(c *Config) { c.Sentinels = []string{"h:65536"} }, `port "65536" is not a number`},
		{"sentinel port name", func(c *Config) { c.Sentinels = []string{"h:redis"} }, `port "redis" is not a number`},
		{"sentinel empty host", func(c *Config) { c.Sentinels = []string{":26379"} }, "host is empty"},
		{"ipv6 without brackets", func(c *Config) { c.Sentinels = []string{"::1:26379"} }, "too many colons"},
		{"ipv4 in brackets", func(c *Config) { c.Sentinels = []string{"[10.0.0.1]:26379"} }, "brackets are for IPv6 addresses only"},
		{"name in brackets", func(c *Config) { c.Sentinels = []string{"[db]:26379"} }, `"db" is not an IPv6 address`},
		{"bad ipv4", func(c *Config) { c.Sentinels = []string{"10.0.0.300:26379"} }, "neither an IP address nor a valid host name"},
		{"bad host name", func(c *Config) { c.Sentinels = []string{"-bad.example:26379"} }, "neither an IP address nor a valid host name"},
		{"host name with space", func(c *Config) { c.Sentinels = []string{"a b:26379"} }, "neither an IP address nor a valid host name"},
		{"duplicate sentinel", func(c *Config) { c.Sentinels = []string{"h:1", "H:1"} }, `sentinels[1]: "H:1" is the same as sentinels[0]`},
		{"bad admin", func(c *Config) { c.Admin = "9121" }, `admin: "9121": missing port in address`},
		{"admin on a group's address", func(c *Config) { c.Admin = "127.0.0.1:6380" }, "groups[0] (mymaster): listen address 127.0.0.1:6380 is also used by admin"},
		{"bad log level", func(c *Config) { c.LogLevel = "verbose" }, `log_level: "verbose" is not one of debug, info, warn, error`},
		{"bad log format", func(c *Config) { c.LogFormat = "xml" }, `log_format: "xml" is not one of console, json`},
		{"negative hold", func(c *Config) { c.HoldTimeout = -time.Second }, "hold_timeout: -1s is negative"},
		{"negative drain", func(c *Config) { c.DrainTimeout = -time.Second }, "drain_timeout: -1s is negative"},
		{"negative dial", func(c *Config) { c.DialTimeout = -time.Second }, "dial_timeout: -1s is negative"},
		{"zero dial", func(c *Config) { c.DialTimeout = 0 }, "dial_timeout: must be greater than 0"},
		{"zero poll", func(c *Config) { c.PollInterval = 0 }, "poll_interval: must be greater than 0"},
		{"too many shared", func(c *Config) { c.SharedConnections = 65 }, "shared_connections: 65 is not between 0 and 64"},
		{"negative shared", func(c *Config) { c.SharedConnections = -1 }, "shared_connections: -1 is not between 0 and 64"},
		{"negative procs", func(c *Config) { c.Procs = -1 }, "procs: -1 is not between 0 and 1024"},
		{"too many procs", func(c *Config) { c.Procs = 1025 }, "procs: 1025 is not between 0 and 1024"},
		{"bad sharing", func(c *Config) { c.Groups[0].Sharing = "maybe" }, `groups[0] (mymaster).sharing: "maybe" is not on, off or empty`},
		{"zero query", func(c *Config) { c.QueryTimeout = 0 }, "query_timeout: must be greater than 0"},
		{"no groups", func(c *Config) { c.Groups = nil }, "groups: none given"},
		{"empty master name", func(c *Config) { c.Groups = []Group{{MasterName: "", Listen: ":6380"}} },
			"groups[0] (listen :6380): neither master_name (--master-name) nor cluster_nodes (--cluster-nodes) is set"},
		{"master name and cluster nodes", func(c *Config) { c.Groups[0].ClusterNodes = []string{"10.0.1.1:7000"} },
			"groups[0] (mymaster): both master_name and cluster_nodes are set"},
		{"bad cluster node", func(c *Config) {
			c.Groups = []Group{{ClusterNodes: []string{"10.0.1.1:7000", "10.0.1.2"}, Listen: ":6380"}}
		},
			`groups[0] (cluster): cluster_nodes[1]: "10.0.1.2": missing port`},
		{"cluster node port 0", func(c *Config) { c.Groups = []Group{{ClusterNodes: []string{"10.0.1.1:0"}, Listen: ":6380"}} },
			`groups[0] (cluster): cluster_nodes[0]: "10.0.1.1:0": port 0 is not a valid destination`},
		{"duplicate cluster node", func(c *Config) {
			c.Groups = []Group{{Name: "shop", ClusterNodes: []string{"node-1:7000", "NODE-1:7000"}, Listen: ":6380"}}
		}, `groups[0] (shop): cluster_nodes[1]: "NODE-1:7000" is the same as cluster_nodes[0]`},
		{"two unnamed cluster groups", func(c *Config) {
			c.Groups = []Group{{ClusterNodes: []string{"a:1"}, Listen: ":1"}, {ClusterNodes: []string{"b:1"}, Listen: ":2"}}
		}, `groups[1] (cluster): a cluster group without a name is called "cluster", as groups[0] is; give each cluster group a name of its own`},
		{"name clashes with a master name", func(c *Config) {
			c.Groups = append(c.Groups, Group{Name: "mymaster", ClusterNodes: []string{"a:1"}, Listen: ":2"})
		},
			"groups[1] (mymaster): name is the same as groups[0]"},
		{"name with space", func(c *Config) { c.Groups = []Group{{Name: "my shop", ClusterNodes: []string{"a:1"}, Listen: ":1"}} },
			`groups[0]: name "my shop" contains spaces`},
		{"sentinel group without sentinels beside a cluster group", func(c *Config) {
			c.Sentinels = nil
			c.Groups = append(c.Groups, Group{ClusterNodes: []string{"a:1"}, Listen: ":2"})
		}, "sentinels: none given"},
		{"master name with space", func(c *Config) { c.Groups = []Group{{MasterName: "my master", Listen: ":6380"}} }, `groups[0]: master_name "my master" contains spaces`},
		{"empty listen", func(c *Config) { c.Groups = []Group{{MasterName: "m", Listen: ""}} }, "groups[0] (m): listen is empty"},
		{"bad listen", func(c *Config) { c.Groups = []Group{{MasterName: "m", Listen: "6380"}} }, `groups[0] (m): listen: "6380": missing port`},
		{"duplicate master name", func(c *Config) { c.Groups = []Group{{MasterName: "m", Listen: ":1"}, {MasterName: "m", Listen: ":2"}} }, "groups[1] (m): master_name is the same as groups[0]"},
		{"duplicate listen", func(c *Config) {
			c.Groups = []Group{{MasterName: "a", Listen: "127.0.0.1:1"}, {MasterName: "b", Listen: "127.0.0.1:1"}}
		}, "groups[1] (b): listen address 127.0.0.1:1 is also used by groups[0] (a)"},
		{"wildcard overlaps", func(c *Config) {
			c.Groups = []Group{{MasterName: "a", Listen: "0.0.0.0:1"}, {MasterName: "b", Listen: "127.0.0.1:1"}}
		}, "groups[1] (b): listen address 127.0.0.1:1 is also used by groups[0] (a)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := valid(tt.fn).Validate()
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a *ValidationError", err)
			}
			if len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0], tt.want) {
				t.Fatalf("problems = %q, want exactly one containing %q", ve.Problems, tt.want)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c = Config{
		TLSMinVersion: c.TLSMinVersion, CommandPolicy: c.CommandPolicy, MaxClients: c.MaxClients,
		ProtoMaxBulkLen: c.ProtoMaxBulkLen, ClientQueryBufferLimit: c.ClientQueryBufferLimit,
		Sentinels:    []string{"nope", "[::1]:26379", "[::1]:26379"},
		Admin:        "127.0.0.1:6380",
		LogLevel:     "loud",
		LogFormat:    "xml",
		DialTimeout:  -1,
		HoldTimeout:  -time.Second,
		PollInterval: 0,
		QueryTimeout: time.Second,
		DrainTimeout: -time.Minute,
		Groups:       []Group{{MasterName: "", Listen: "127.0.0.1:6380"}, {MasterName: "m", Listen: "x"}, {MasterName: "m", Listen: ":6381"}},
	}
	err := c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate = %v, want a *ValidationError", err)
	}
	want := []string{
		`sentinels[0]: "nope": missing port`,
		`sentinels[2]: "[::1]:26379" is the same as sentinels[1]`,
		`log_level: "loud"`,
		`log_format: "xml"`,
		"dial_timeout: -1ns is negative",
		"hold_timeout: -1s is negative",
		"poll_interval: must be greater than 0",
		"drain_timeout: -1m0s is negative",
		"groups[0] (listen 127.0.0.1:6380): neither master_name (--master-name) nor cluster_nodes (--cluster-nodes) is set",
		`groups[1] (m): listen: "x": missing port`,
		"groups[2] (m): master_name is the same as groups[1]",
		"groups[0] (listen 127.0.0.1:6380): listen address 127.0.0.1:6380 is also used by admin",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q", w)
		}
	}
	if len(ve.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(ve.Problems), len(want), err)
	}
	if !strings.HasPrefix(err.Error(), "invalid configuration:\n  - ") {
		t.Errorf("error text %q does not start with the one-per-line header", err)
	}
}

// TestValidateFileProblems checks what Load keeps for Validate: unknown keys
// (a typo must be reported, not ignored) and durations without a unit,
// listed together with the other problems.
func TestValidateFileProblems(t *testing.T) {
	file := `
sentinels: ["10.0.0.1:26379"]
hold_timout: 3s
poll_interval: 2
drain_timeout: 0
listen: ":6380"
cluster_nodes: ["a:1"]
tls: {cert: x.pem}
groups:
  - master_name: m
    lisen: ":6380"
`
	c, err := load(t, nil, nil, file)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	err = c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate = %v, want a *ValidationError", err)
	}
	want := []string{
		`unknown key "hold_timout" (did you mean "hold_timeout"?)`,
		`poll_interval: 2 has no unit`,
		`key "listen" belongs in a group`,
		`key "cluster_nodes" belongs in a group: groups: [{master_name: NAME, listen: ADDR}] or [{cluster_nodes: [HOST:PORT], listen: ADDR}]`,
		`unknown key "tls"`,
		`unknown key "groups[0].lisen" (did you mean "listen"?)`,
		`groups[0] (m): listen is empty`,
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q", w)
		}
	}
	if len(ve.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(ve.Problems), len(want), err)
	}
	if !strings.Contains(ve.Problems[0], "config file ") {
		t.Errorf("file problem %q does not name the file", ve.Problems[0])
	}
}

// TestValidateQuickFormConflict checks the quick form added to a file's
// groups: a listen address the file already uses is reported, not ignored.
func TestValidateQuickFormConflict(t *testing.T) {
	c, err := load(t, []string{"--master-name", "queue", "--listen", "127.0.0.1:6380"}, nil, twoGroups)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := "groups[2] (queue): listen address 127.0.0.1:6380 is also used by groups[0] (sessions)"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Validate = %v, want it to contain %q", err, want)
	}
}
