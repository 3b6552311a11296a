package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// load writes file (if any) to a temporary config file, passes it with
// --config before args, and reads the environment from env.
func load(t *testing.T, args []string, env map[string]string, file string) (Config, error) {
	t.Helper()
	if file != "" {
		path := writeFile(t, file)
		args = append([]string{"--config", path}, args...)
	}
	return Load(args, func(k string) string { return env[k] })
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sentinel-proxy.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// with returns Default() changed by fn, for expected values.
func with(fn func(*Config)) Config {
	c := Default()
	fn(&c)
	return c
}

func TestDefault(t *testing.T) {
	want := Config{
		LogLevel:     "info",
		LogFormat:    "console",
		DialTimeout:  2 * time.Second,
		HoldTimeout:  5 * time.Second,
		PollInterval: time.Second,
		QueryTimeout: 500 * time.Millisecond,
		DrainTimeout: 10 * time.Second,

		TLSMinVersion:          "1.2",
		CommandPolicy:          "deny",
		MaxClients:             10000,
		ProtoMaxBulkLen:        512 << 20,
		ClientQueryBufferLimit: 1 << 30,
		PubSubOutputLimit:      32 << 20,
		HandshakeTimeout:       10 * time.Second,
		SharedConnections:      1,
	}
	if got := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Default() =\n%s\nwant\n%s", got, want)
	}
	got, err := Load(nil, nil)
	if err != nil {
		t.Fatalf("Load(nil, nil): %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Load with nothing set =\n%s\nwant the defaults\n%s", got, want)
	}
}

// clusterGroups has two cluster groups, one of them with the default name,
// and a Sentinel group, but no sentinels.
const clusterGroups = `
groups:
  - name: shop
    cluster_nodes: ["s:1", " s:2 "]
    listen: ":6381"
  - cluster_nodes: [a:1]
    listen: ":6380"
  - {master_name: cache, listen: ":6382"}
`

const twoGroups = `
sentinels: ["10.0.0.1:26379", "[::1]:26379", "sentinel-3:26379"]
sentinel_password: file-secret
hold_timeout: 3s
log_level: warn
admin: 127.0.0.1:9121
groups:
  - master_name: sessions
    listen: 127.0.0.1:6380
  - master_name: cache
    listen: 127.0.0.1:6381
`

func TestLoad(t *testing.T) {
	fileConfig := with(func(c *Config) {
		c.Sentinels = []string{"10.0.0.1:26379", "[::1]:26379", "sentinel-3:26379"}
		c.SentinelPassword = "file-secret"
		c.HoldTimeout = 3 * time.Second
		c.LogLevel = "warn"
		c.Admin = "127.0.0.1:9121"
		c.Groups = []Group{{MasterName: "sessions", Listen: "127.0.0.1:6380"}, {MasterName: "cache", Listen: "127.0.0.1:6381"}}
	})
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want Config
	}{
		{
			name: "quick form",
			args: []string{"--listen", "127.0.0.1:6380", "--master-name", "mymaster",
				"--sentinels", "10.0.0.1:26379,10.0.0.2:26379", "--admin", "127.0.0.1:9121"},
			want: with(func(c *Config) {
				c.Sentinels = []string{"10.0.0.1:26379", "10.0.0.2:26379"}
				c.Admin = "127.0.0.1:9121"
				c.Groups = []Group{{MasterName: "mymaster", Listen: "127.0.0.1:6380"}}
			}),
		},
		{
			name: "quick form with = and every setting",
			args: []string{"--listen=:6380", "--master-name=m", "--sentinels=[::1]:26379",
				"--sentinel-username=su", "--sentinel-password=sp", "--backend-username=bu", "--backend-password=bp",
				"--log-level=debug", "--log-format=json", "--dial-timeout=1s", "--hold-timeout=0s",
				"--poll-interval=250ms", "--query-timeout=100ms", "--drain-timeout=1m", "--shared-connections=3", "--procs=2"},
			want: Config{
				Sentinels: []string{"[::1]:26379"}, SentinelUsername: "su", SentinelPassword: "sp",
				BackendUsername: "bu", BackendPassword: "bp", LogLevel: "debug", LogFormat: "json",
				DialTimeout: time.Second, HoldTimeout: 0, PollInterval: 250 * time.Millisecond,
				QueryTimeout: 100 * time.Millisecond, DrainTimeout: time.Minute,
				Groups: []Group{{MasterName: "m", Listen: ":6380"}},

				TLSMinVersion: "1.2", CommandPolicy: "deny", MaxClients: 10000,
				ProtoMaxBulkLen: 512 << 20, ClientQueryBufferLimit: 1 << 30,
				PubSubOutputLimit: 32 << 20, HandshakeTimeout: 10 * time.Second,
				SharedConnections: 3, Procs: 2,
			},
		},
		{
			name: "sentinels flag repeated",
			args: []string{"--sentinels", "a:1", "--sentinels", "b:2,[::1]:3"},
			want: with(func(c *Config) { c.Sentinels = []string{"a:1", "b:2", "[::1]:3"} }),
		},
		{
			name: "yaml with several groups",
			file: twoGroups,
			want: fileConfig,
		},
		{
			name: "sentinels as one comma-separated string in yaml",
			file: "sentinels: \"a:1, b:2\"\n",
			want: with(func(c *Config) { c.Sentinels = []string{"a:1", "b:2"} }),
		},
		{
			name: "env overrides file",
			file: twoGroups,
			env: map[string]string{
				"SENTINEL_PROXY_SENTINELS":         "e1:26379, e2:26379,",
				"SENTINEL_PROXY_HOLD_TIMEOUT":      " 7s ",
				"SENTINEL_PROXY_SENTINEL_PASSWORD": " env secret ",
				"SENTINEL_PROXY_ADMIN":             ":9999",
				"SENTINEL_PROXY_LOG_LEVEL":         "ERROR",
				"SENTINEL_PROXY_LOG_FORMAT":        "",
			},
			want: with(func(c *Config) {
				*c = fileConfig
				c.Sentinels = []string{"e1:26379", "e2:26379"}
				c.HoldTimeout = 7 * time.Second
				c.SentinelPassword = " env secret " // kept as given
				c.Admin = ":9999"
				c.LogLevel = "error"
			}),
		},
		{
			name: "flags override env and file, unset flags do not",
			file: twoGroups,
			args: []string{"--hold-timeout", "9s", "--sentinels", "f:1", "--sentinel-password", "flag-secret"},
			env: map[string]string{
				"SENTINEL_PROXY_HOLD_TIMEOUT":  "7s",
				"SENTINEL_PROXY_SENTINELS":     "e1:26379",
				"SENTINEL_PROXY_LOG_LEVEL":     "debug",
				"SENTINEL_PROXY_DRAIN_TIMEOUT": "1s",
			},
			want: with(func(c *Config) {
				*c = fileConfig
				c.HoldTimeout = 9 * time.Second
				c.Sentinels = []string{"f:1"}
				c.SentinelPassword = "flag-secret"
				c.LogLevel = "debug"
				c.DrainTimeout = time.Second
			}),
		},
		{
			name: "flag equal to the default still overrides env",
			args: []string{"--log-level", "info"},
			env:  map[string]string{"SENTINEL_PROXY_LOG_LEVEL": "debug"},
			want: Default(),
		},
		{
			name: "quick form from env",
			env: map[string]string{
				"SENTINEL_PROXY_LISTEN":      "127.0.0.1:6390",
				"SENTINEL_PROXY_MASTER_NAME": "envmaster",
				"SENTINEL_PROXY_SENTINELS":   "a:1,b:2",
			},
			want: with(func(c *Config) {
				c.Sentinels = []string{"a:1", "b:2"}
				c.Groups = []Group{{MasterName: "envmaster", Listen: "127.0.0.1:6390"}}
			}),
		},
		{
			name: "quick form: env master name, flag listen",
			args: []string{"--listen", ":7000"},
			env:  map[string]string{"SENTINEL_PROXY_MASTER_NAME": "m", "SENTINEL_PROXY_LISTEN": ":6000"},
			want: with(func(c *Config) { c.Groups = []Group{{MasterName: "m", Listen: ":7000"}} }),
		},
		{
			name: "quick form with a file group of the same name replaces its listen",
			file: twoGroups,
			args: []string{"--master-name", "cache", "--listen", "127.0.0.1:7381"},
			want: with(func(c *Config) {
				*c = fileConfig
				c.Groups = []Group{{MasterName: "sessions", Listen: "127.0.0.1:6380"}, {MasterName: "cache", Listen: "127.0.0.1:7381"}}
			}),
		},
		{
			name: "quick form with a new name adds a group to the file's",
			file: twoGroups,
			args: []string{"--master-name", "queue", "--listen", "127.0.0.1:6382"},
			want: with(func(c *Config) {
				*c = fileConfig
				c.Groups = []Group{{MasterName: "sessions", Listen: "127.0.0.1:6380"}, {MasterName: "cache", Listen: "127.0.0.1:6381"}, {MasterName: "queue", Listen: "127.0.0.1:6382"}}
			}),
		},
		{
			name: "master name alone matching a file group changes nothing",
			file: twoGroups,
			args: []string{"--master-name", "cache"},
			want: fileConfig,
		},
		{
			name: "cluster quick form from flags needs no sentinels",
			args: []string{"--cluster-nodes", "10.0.1.1:7000, 10.0.1.2:7000,", "--listen", ":6380"},
			want: with(func(c *Config) {
				c.Groups = []Group{{ClusterNodes: []string{"10.0.1.1:7000", "10.0.1.2:7000"}, Listen: ":6380"}}
			}),
		},
		{
			name: "cluster quick form from env",
			env:  map[string]string{"SENTINEL_PROXY_CLUSTER_NODES": "a:1,b:2", "SENTINEL_PROXY_LISTEN": ":6380"},
			want: with(func(c *Config) { c.Groups = []Group{{ClusterNodes: []string{"a:1", "b:2"}, Listen: ":6380"}} }),
		},
		{
			name: "cluster quick form replaces the file's group called cluster",
			file: clusterGroups,
			args: []string{"--cluster-nodes", "c:3", "--listen", ":7000"},
			want: with(func(c *Config) {
				c.Groups = []Group{
					{Name: "shop", ClusterNodes: []string{"s:1", "s:2"}, Listen: ":6381"},
					{ClusterNodes: []string{"c:3"}, Listen: ":7000"},
					{MasterName: "cache", Listen: ":6382"},
				}
			}),
		},
		{
			name: "cluster quick form is added when the file has no group called cluster",
			file: twoGroups,
			args: []string{"--cluster-nodes", "c:3", "--listen", ":7000"},
			want: with(func(c *Config) {
				*c = fileConfig
				c.Groups = append(c.Groups, Group{ClusterNodes: []string{"c:3"}, Listen: ":7000"})
			}),
		},
		{
			name: "master name and cluster nodes together make one group, for Validate to report",
			args: []string{"--master-name", "m", "--cluster-nodes", "c:3", "--listen", ":7000"},
			want: with(func(c *Config) { c.Groups = []Group{{MasterName: "m", ClusterNodes: []string{"c:3"}, Listen: ":7000"}} }),
		},
		{
			name: "listen alone adds a group without a name, for Validate to report",
			args: []string{"--listen", ":6380"},
			want: with(func(c *Config) { c.Groups = []Group{{MasterName: "", Listen: ":6380"}} }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := load(t, tt.args, tt.env, tt.file)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			// Compare unredacted: the secrets' precedence is under test too.
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got\n%#v\nwant\n%#v", plainOf(got), plainOf(tt.want))
			}
		})
	}
}

// plainOf shows a Config's fields without its redacting Format.
func plainOf(c Config) any {
	type plain Config
	return plain(c)
}

func TestLoadConfigPathFromEnv(t *testing.T) {
	path := writeFile(t, twoGroups)
	got, err := Load(nil, func(k string) string {
		if k == "SENTINEL_PROXY_CONFIG" {
			return path
		}
		return ""
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if len(got.Groups) != 2 || got.HoldTimeout != 3*time.Second {
		t.Fatalf("file named by SENTINEL_PROXY_CONFIG not read: %#v", plainOf(got))
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		file    string
		wantErr string
	}{
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "unknown flag: --nope"},
		{name: "flag without value", args: []string{"--listen"}, wantErr: "flag needs an argument"},
		{name: "positional argument", args: []string{"--listen", ":1", "extra"}, wantErr: `unexpected argument "extra"`},
		{name: "bad duration flag", args: []string{"--hold-timeout", "soon"}, wantErr: `invalid argument "soon" for "--hold-timeout"`},
		{name: "bad duration env", env: map[string]string{"SENTINEL_PROXY_POLL_INTERVAL": "often"}, wantErr: `environment SENTINEL_PROXY_POLL_INTERVAL: invalid argument "often"`},
		{name: "bad duration in file", file: "query_timeout: fast\n", wantErr: "query_timeout"},
		{name: "yaml syntax", file: "sentinels: [a:1\n", wantErr: "read config file"},
		{name: "wrong type in file", file: "log_level: [debug, info]\n", wantErr: "log_level"},
		{name: "missing file", args: []string{"--config", "/nonexistent/sentinel-proxy.yaml"}, wantErr: "/nonexistent/sentinel-proxy.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.args, tt.env, tt.file)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrHelp) {
				t.Fatalf("Load error %v must not be ErrHelp", err)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--listen", ":1", "-h"}} {
		if _, err := Load(args, nil); !errors.Is(err, ErrHelp) {
			t.Errorf("Load(%q) error = %v, want ErrHelp", args, err)
		}
	}
	usage := Usage()
	newFlagSet().VisitAll(func(f *pflag.Flag) {
		_, text := pflag.UnquoteUsage(f)
		if !strings.Contains(usage, "--"+f.Name) || !strings.Contains(usage, text) {
			t.Errorf("Usage() does not document --%s", f.Name)
		}
	})
	for _, want := range []string{"SENTINEL_PROXY_HOLD_TIMEOUT", "(default 5s)", "Precedence", "groups:", "replaces"} {
		if !strings.Contains(usage, want) {
			t.Errorf("Usage() lacks %q", want)
		}
	}
}

func TestExampleFile(t *testing.T) {
	c, err := Load([]string{"--config", "example.yaml"}, nil)
	if err != nil {
		t.Fatalf("Load example.yaml: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("example.yaml does not validate: %v", err)
	}
	if len(c.Groups) != 3 || len(c.Sentinels) != 3 || c.LogFormat != "json" || c.Groups[2].Label() != "shop" || len(c.Groups[2].ClusterNodes) != 3 {
		t.Fatalf("example.yaml not read as written: %s", c)
	}
	// The example documents every setting, so operators can copy from it.
	text, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	eachSetting(reflect.ValueOf(c), func(key string, _ reflect.Value, _ reflect.StructField) {
		if !strings.Contains(string(text), "\n"+key+":") {
			t.Errorf("example.yaml lacks key %q", key)
		}
	})
	eachSetting(reflect.ValueOf(c.Groups[0]), func(key string, _ reflect.Value, _ reflect.StructField) {
		if !strings.Contains(string(text), " "+key+":") {
			t.Errorf("example.yaml lacks group key %q", key)
		}
	})
}

// TestStringRoundTrip checks that String() is a config file Load reads back
// to the same value (secrets unset, since they are redacted).
func TestStringRoundTrip(t *testing.T) {
	in, err := load(t, nil, nil, twoGroups)
	if err != nil {
		t.Fatal(err)
	}
	in.SentinelPassword = ""
	out, err := load(t, nil, nil, in.String())
	if err != nil {
		t.Fatalf("Load(String()): %v\n%s", err, in)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip changed the config:\n%s\nbecame\n%s", in, out)
	}
}

func TestGroupLabel(t *testing.T) {
	tests := []struct {
		g    Group
		want string
	}{
		{Group{MasterName: "mymaster"}, "mymaster"},
		{Group{Name: "sessions", MasterName: "mymaster"}, "sessions"},
		{Group{ClusterNodes: []string{"a:1"}}, DefaultClusterName},
		{Group{Name: "shop", ClusterNodes: []string{"a:1"}}, "shop"},
		{Group{Listen: ":6380"}, ""},
	}
	for _, tt := range tests {
		if got := tt.g.Label(); got != tt.want {
			t.Errorf("%+v.Label() = %q, want %q", tt.g, got, tt.want)
		}
	}
}
