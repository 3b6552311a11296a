package compose

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sentinel-proxy/sentinel-proxy/config"
	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
)

// The compose file, as far as the tests look into it. Decoding is strict
// (KnownFields), so a misspelt key in a service fails the test.
type composeFile struct {
	Name       string             `yaml:"name"`
	Services   map[string]service `yaml:"services"`
	Extensions map[string]any     `yaml:",inline"` // x-* anchors
}

type service struct {
	Image       string               `yaml:"image"`
	Build       build                `yaml:"build"`
	Restart     string               `yaml:"restart"`
	Command     []string             `yaml:"command"`
	Environment map[string]string    `yaml:"environment"`
	Volumes     []string             `yaml:"volumes"`
	Ports       []string             `yaml:"ports"`
	Healthcheck healthcheck          `yaml:"healthcheck"`
	DependsOn   map[string]dependsOn `yaml:"depends_on"`
}

type build struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// UnmarshalYAML accepts the short form `build: ./dir` too.
func (b *build) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		b.Context = n.Value
		return nil
	}
	type plain build
	return n.Decode((*plain)(b))
}

type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
}

type dependsOn struct {
	Condition string `yaml:"condition"`
}

// The compose topology, named as integration/topology names its nodes.
var (
	dataNodes = []string{"redis-1", "redis-2", "redis-3"} // redis-1 is the initial master
	sentinels = []string{"sentinel-1", "sentinel-2", "sentinel-3"}
)

const (
	masterService = "redis-1"
	redisImage    = "redis:7.0" // the Redis the integration tests run (Debian's 7.0.15)
	templatesDir  = "/usr/local/etc/redis"
	proxyConfig   = "sentinel-proxy.yaml"
)

// envExample reads .env.example as compose reads .env.
func envExample(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(".env.example")
	if err != nil {
		t.Fatal(err)
	}
	env := make(map[string]string)
	for l := range strings.SplitSeq(string(b), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf(".env.example: %q is not NAME=value", l)
		}
		env[k] = v
	}
	return env
}

// interpolation is compose's variable syntax: $$, ${NAME}, ${NAME:?msg},
// ${NAME?msg}, ${NAME:-default}, ${NAME-default}.
var interpolation = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[?-])([^}]*))?\}`)

// interpolate substitutes env into s as docker compose does and returns the
// names it referenced; a ${NAME:?msg} with NAME unset is an error, as compose
// refuses to start then.
func interpolate(s string, env map[string]string) (string, []string, error) {
	var names []string
	var err error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		sub := interpolation.FindStringSubmatch(m)
		name, op, arg := sub[1], sub[2], sub[3]
		names = append(names, name)
		v, set := env[name]
		switch {
		case strings.HasPrefix(op, ":") && v == "", op == "?" && !set, op == "-" && !set:
			if strings.HasSuffix(op, "?") {
				err = fmt.Errorf("%s is required: %s", name, arg)
			}
			return arg
		}
		return v
	})
	return out, names, err
}

// loadCompose parses docker-compose.yml with the variables of .env.example.
func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	text, _, err := interpolate(string(raw), envExample(t))
	if err != nil {
		t.Fatalf("docker-compose.yml with .env.example: %v", err)
	}
	var f composeFile
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	return f
}

// TestComposeVariablesComeFromEnvExample checks that every variable the
// compose file uses is in .env.example, and that compose refuses to start
// without REDIS_PASSWORD rather than run Redis without a password.
func TestComposeVariablesComeFromEnvExample(t *testing.T) {
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	env := envExample(t)
	_, names, err := interpolate(string(raw), env)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, "REDIS_PASSWORD") {
		t.Errorf("docker-compose.yml does not use REDIS_PASSWORD")
	}
	for _, n := range names {
		if _, ok := env[n]; !ok {
			t.Errorf("docker-compose.yml uses ${%s}, which .env.example does not set", n)
		}
	}
	if _, _, err := interpolate(string(raw), map[string]string{}); err == nil || !strings.Contains(err.Error(), ".env") {
		t.Errorf("without .env, interpolation error = %v; want REDIS_PASSWORD required, pointing at .env", err)
	}
	if p := env["REDIS_PASSWORD"]; strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != "" {
		t.Errorf(".env.example REDIS_PASSWORD %q has characters a URL (session.save_path) would need escaped", p)
	}
}

// TestComposeServices checks the services, their images, commands, health
// checks, start order and mounts.
func TestComposeServices(t *testing.T) {
	f := loadCompose(t)
	want := slices.Concat(dataNodes, sentinels, []string{"proxy", "app"})
	var got []string
	for name := range f.Services {
		got = append(got, name)
	}
	slices.Sort(got)
	if slices.Sort(want); !slices.Equal(got, want) {
		t.Fatalf("services = %v, want %v", got, want)
	}

	for _, name := range slices.Concat(dataNodes, sentinels) {
		s := f.Services[name]
		if s.Image != redisImage {
			t.Errorf("%s: image %q, want %q", name, s.Image, redisImage)
		}
		wantCmd := []string{"sh", templatesDir + "/start.sh", name + ".conf"}
		if !slices.Equal(s.Command, wantCmd) {
			t.Errorf("%s: command %q, want %q", name, s.Command, wantCmd)
		}
		if !slices.Contains(s.Volumes, "./redis:"+templatesDir+":ro") {
			t.Errorf("%s: volumes %q lack ./redis:%s:ro", name, s.Volumes, templatesDir)
		}
		if s.Environment["REDIS_PASSWORD"] == "" {
			t.Errorf("%s: REDIS_PASSWORD not passed (start.sh needs it)", name)
		}
		port := "6379"
		if strings.HasPrefix(name, "sentinel-") {
			port = "26379"
			// redis-cli would AUTH to a sentinel without requirepass and fail.
			if _, ok := s.Environment["REDISCLI_AUTH"]; ok {
				t.Errorf("%s: REDISCLI_AUTH set, but the sentinels have no password", name)
			}
			for _, d := range dataNodes {
				checkDependsHealthy(t, f, name, d)
			}
		} else if s.Environment["REDISCLI_AUTH"] == "" {
			t.Errorf("%s: REDISCLI_AUTH not set: its healthcheck's redis-cli ping would get NOAUTH", name)
		}
		checkHealthcheck(t, name, s.Healthcheck)
		if test := strings.Join(s.Healthcheck.Test, " "); !strings.Contains(test, "redis-cli -p "+port+" ping") || !strings.Contains(test, "PONG") {
			t.Errorf("%s: healthcheck %q does not check redis-cli -p %s ping for PONG", name, test, port)
		}
		if len(s.Ports) > 0 {
			t.Errorf("%s: publishes %v; Redis and Sentinel stay on the compose network", name, s.Ports)
		}
	}
	for _, r := range dataNodes[1:] {
		checkDependsHealthy(t, f, r, masterService)
	}

	proxy := f.Services["proxy"]
	for _, s := range sentinels {
		checkDependsHealthy(t, f, "proxy", s)
	}
	if proxy.Build.Context != "../.." || (proxy.Build.Dockerfile != "" && proxy.Build.Dockerfile != "Dockerfile") {
		t.Errorf("proxy: build %+v, want the repository's Dockerfile (context ../..)", proxy.Build)
	}
	if _, err := os.Stat(filepath.Join(proxy.Build.Context, "Dockerfile")); err != nil {
		t.Errorf("proxy: build context has no Dockerfile: %v", err)
	}
	for _, p := range []string{"127.0.0.1:6380:6380", "127.0.0.1:9121:9121"} {
		if !slices.Contains(proxy.Ports, p) {
			t.Errorf("proxy: ports %q lack %q", proxy.Ports, p)
		}
	}
	checkHealthcheck(t, "proxy", proxy.Healthcheck)
	if proxy.Environment["SENTINEL_PROXY_BACKEND_PASSWORD"] != envExample(t)["REDIS_PASSWORD"] {
		t.Errorf("proxy: SENTINEL_PROXY_BACKEND_PASSWORD is not REDIS_PASSWORD")
	}
	mount := "./" + proxyConfig + ":/etc/sentinel-proxy/" + proxyConfig + ":ro"
	if !slices.Contains(proxy.Volumes, mount) {
		t.Errorf("proxy: volumes %q lack %q", proxy.Volumes, mount)
	}
	if !slices.Equal(proxy.Command, []string{"--config", "/etc/sentinel-proxy/" + proxyConfig}) {
		t.Errorf("proxy: command %q does not load the mounted config", proxy.Command)
	}

	app := f.Services["app"]
	checkDependsHealthy(t, f, "app", "proxy")
	if app.Build.Context != "./php" {
		t.Errorf("app: build %+v, want ./php", app.Build)
	}
	for _, m := range []string{"./php/php.ini:/usr/local/etc/php/conf.d/zz-sessions.ini:ro", "./php/index.php:/var/www/html/index.php:ro"} {
		if !slices.Contains(app.Volumes, m) {
			t.Errorf("app: volumes %q lack %q", app.Volumes, m)
		}
	}
	if app.Environment["REDIS_PASSWORD"] == "" {
		t.Errorf("app: REDIS_PASSWORD not passed (php.ini reads it)")
	}

	// Every bind-mounted file or directory exists here.
	for name, s := range f.Services {
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, ".") {
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s: mounts %s: %v", name, src, err)
				}
			}
		}
	}
}

// checkDependsHealthy checks that service from waits for to's health check.
func checkDependsHealthy(t *testing.T, f composeFile, from, to string) {
	t.Helper()
	if d, ok := f.Services[from].DependsOn[to]; !ok || d.Condition != "service_healthy" {
		t.Errorf("%s: depends_on %s = %+v, want condition: service_healthy", from, to, f.Services[from].DependsOn[to])
	}
	if len(f.Services[to].Healthcheck.Test) == 0 {
		t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", from, to, to)
	}
}

// checkHealthcheck checks that a health check has a command and sane timing.
func checkHealthcheck(t *testing.T, name string, h healthcheck) {
	t.Helper()
	if len(h.Test) < 2 || (h.Test[0] != "CMD" && h.Test[0] != "CMD-SHELL") {
		t.Errorf("%s: healthcheck test %q is not CMD or CMD-SHELL", name, h.Test)
	}
	for _, d := range []struct{ what, val string }{{"interval", h.Interval}, {"timeout", h.Timeout}, {"start_period", h.StartPeriod}} {
		if v, err := time.ParseDuration(d.val); err != nil || v <= 0 {
			t.Errorf("%s: healthcheck %s %q is not a positive duration", name, d.what, d.val)
		}
	}
	if h.Retries < 1 {
		t.Errorf("%s: healthcheck retries %d", name, h.Retries)
	}
}

// redisConf is a Redis or Sentinel config file: each directive (its first
// word, lower case, with "sentinel" kept together with its subcommand) and
// its arguments, in order.
type redisConf map[string][][]string

func readConf(t *testing.T, path string) redisConf {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := make(redisConf)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		key := strings.ToLower(f[0])
		if key == "sentinel" && len(f) > 1 {
			key += " " + strings.ToLower(f[1])
			f = f[1:]
		}
		c[key] = append(c[key], f[1:])
	}
	return c
}

// one returns the arguments of a directive that must appear exactly once.
func (c redisConf) one(t *testing.T, file, key string) []string {
	t.Helper()
	if len(c[key]) != 1 {
		t.Errorf("%s: %q appears %d times, want once", file, key, len(c[key]))
		return nil
	}
	return c[key][0]
}

// TestComposeRedisConfigsMirrorTopology checks the data node and sentinel
// configs against the topology the integration tests run. integration/topology
// renders its configs in unexported functions, so the comparison is with its
// exported defaults (topology.Default*) plus parallel-syncs 1, which
// sentinelConfig writes as a literal.
func TestComposeRedisConfigsMirrorTopology(t *testing.T) {
	if got, want := len(dataNodes), 1+topology.DefaultReplicas; got != want {
		t.Errorf("%d data nodes, the topology runs %d", got, want)
	}
	if got, want := len(sentinels), topology.DefaultSentinels; got != want {
		t.Errorf("%d sentinels, the topology runs %d", got, want)
	}
	for _, name := range dataNodes {
		file := filepath.Join("redis", name+".conf")
		c := readConf(t, file)
		check := func(key string, want ...string) {
			t.Helper()
			if got := c.one(t, file, key); got != nil && !slices.Equal(got, want) {
				t.Errorf("%s: %s %q, want %q", file, key, got, want)
			}
		}
		check("port", "6379")
		check("replica-announce-ip", name) // its service name, what sentinels hand out
		check("replica-announce-port", "6379")
		check("repl-diskless-sync", "yes")
		check("repl-diskless-sync-delay", "0")
		check("protected-mode", "no")
		if name == masterService {
			if len(c["replicaof"]) > 0 {
				t.Errorf("%s: the initial master has replicaof %q", file, c["replicaof"])
			}
		} else {
			check("replicaof", masterService, "6379")
		}
		// The password comes from the environment (start.sh), never a file.
		for _, k := range []string{"requirepass", "masterauth"} {
			if len(c[k]) > 0 {
				t.Errorf("%s: %s in the file; start.sh appends it from REDIS_PASSWORD", file, k)
			}
		}
	}
	for _, name := range sentinels {
		file := filepath.Join("redis", name+".conf")
		c := readConf(t, file)
		check := func(key string, want ...string) {
			t.Helper()
			if got := c.one(t, file, key); got != nil && !slices.Equal(got, want) {
				t.Errorf("%s: %s %q, want %q", file, key, got, want)
			}
		}
		m := topology.DefaultMasterName
		check("port", "26379")
		check("sentinel monitor", m, masterService, "6379", strconv.Itoa(topology.DefaultQuorum))
		check("sentinel down-after-milliseconds", m, strconv.FormatInt(topology.DefaultDownAfter.Milliseconds(), 10))
		check("sentinel failover-timeout", m, strconv.FormatInt(topology.DefaultFailoverTimeout.Milliseconds(), 10))
		check("sentinel parallel-syncs", m, "1")
		// Docker networking: names in, names out (see the file's comments).
		check("sentinel resolve-hostnames", "yes")
		check("sentinel announce-hostnames", "yes")
		check("sentinel announce-ip", name)
		check("sentinel announce-port", "26379")
		check("protected-mode", "no")
		if len(c["sentinel auth-pass"]) > 0 {
			t.Errorf("%s: sentinel auth-pass in the file; start.sh appends it from REDIS_PASSWORD", file)
		}
	}
}

// TestComposeProxyConfigIsValid loads the mounted sentinel-proxy.yaml with
// the proxy's own loader and the environment compose gives the container.
func TestComposeProxyConfigIsValid(t *testing.T) {
	f := loadCompose(t)
	env := f.Services["proxy"].Environment
	cfg, err := config.Load([]string{"--config", proxyConfig}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("load %s: %v", proxyConfig, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", proxyConfig, err)
	}
	var want []string
	for _, s := range sentinels {
		want = append(want, s+":26379")
	}
	if !slices.Equal(cfg.Sentinels, want) {
		t.Errorf("sentinels = %q, want the compose sentinels %q", cfg.Sentinels, want)
	}
	if len(cfg.Groups) != 1 || cfg.Groups[0].MasterName != topology.DefaultMasterName {
		t.Fatalf("groups = %+v, want one group for %q", cfg.Groups, topology.DefaultMasterName)
	}
	if _, port, _ := net.SplitHostPort(cfg.Groups[0].Listen); port != "6380" {
		t.Errorf("listen %q: port is not 6380, the port compose publishes and php.ini uses", cfg.Groups[0].Listen)
	}
	// In a container, loopback is the container's own: clients on the
	// compose network need a wildcard address.
	if host, _, _ := net.SplitHostPort(cfg.Groups[0].Listen); host != "0.0.0.0" && host != "" {
		t.Errorf("listen %q is not reachable from the app container", cfg.Groups[0].Listen)
	}
	if cfg.BackendPassword == "" || cfg.BackendPassword != envExample(t)["REDIS_PASSWORD"] {
		t.Errorf("backend password not taken from SENTINEL_PROXY_BACKEND_PASSWORD")
	}
	if cfg.Password != "" || len(cfg.Users) > 0 {
		t.Errorf("proxy-terminated auth configured; php.ini's auth= is the Redis password (passthrough)")
	}
	// The HEALTHCHECK's URL must reach the admin endpoint.
	host, port, _ := net.SplitHostPort(cfg.Admin)
	u := healthURL(t, f.Services["proxy"].Healthcheck.Test)
	if port != u.Port() || (host != "0.0.0.0" && host != "127.0.0.1") || u.Hostname() != "127.0.0.1" {
		t.Errorf("admin %q is not reached by the healthcheck URL %s", cfg.Admin, u)
	}
	if u.Path != "/readyz" {
		t.Errorf("healthcheck URL %s: want /readyz, so that the app starts once a master is verified", u)
	}
	// The command's own timeout fits in the healthcheck's.
	hcTimeout, _ := time.ParseDuration(f.Services["proxy"].Healthcheck.Timeout)
	if d := healthFlag(t, f.Services["proxy"].Healthcheck.Test[1:], "--timeout", "2s"); d >= hcTimeout {
		t.Errorf("health --timeout %v is not below the healthcheck timeout %v", d, hcTimeout)
	}
}
