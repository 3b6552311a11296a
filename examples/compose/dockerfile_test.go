package compose

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sentinel-proxy/sentinel-proxy/config"
)

// instruction is one Dockerfile instruction: its keyword (upper case) and
// the rest of the line, continuation lines joined.
type instruction struct {
	cmd, args string
	line      int
}

// parseDockerfile splits a Dockerfile into instructions, as far as these
// tests need: comments, blank lines and backslash continuations. It fails
// on a line that is not an instruction.
func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	known := []string{"FROM", "ARG", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "USER", "EXPOSE",
		"HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL", "VOLUME", "STOPSIGNAL", "SHELL", "ONBUILD"}
	var out []instruction
	var cur *instruction
	for i, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur == nil && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur != nil && strings.HasPrefix(trimmed, "#") {
			continue // comment lines inside a continuation are dropped, as Docker does
		}
		cont := strings.HasSuffix(trimmed, "\\")
		trimmed = strings.TrimSuffix(trimmed, "\\")
		if cur == nil {
			kw, rest, _ := strings.Cut(trimmed, " ")
			if !slices.Contains(known, strings.ToUpper(kw)) {
				t.Fatalf("%s:%d: %q is not a Dockerfile instruction", path, i+1, kw)
			}
			out = append(out, instruction{cmd: strings.ToUpper(kw), args: strings.TrimSpace(rest), line: i + 1})
			cur = &out[len(out)-1]
		} else {
			cur.args += " " + strings.TrimSpace(trimmed)
		}
		if !cont {
			cur = nil
		}
	}
	if cur != nil {
		t.Fatalf("%s: ends inside a continuation", path)
	}
	return out
}

// flagsAndRest splits the leading --flag=value options off an instruction.
func flagsAndRest(args string) (map[string]string, string) {
	flags := make(map[string]string)
	for strings.HasPrefix(args, "--") {
		f, rest, _ := strings.Cut(args, " ")
		k, v, _ := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		flags[k] = v
		args = strings.TrimSpace(rest)
	}
	return flags, args
}

// TestComposeDockerfile checks the repository's Dockerfile: a static build
// stage, a distroless non-root final stage, and a HEALTHCHECK through
// `sentinel-proxy health` that reaches the admin endpoint of the compose
// example's config.
func TestComposeDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "../../Dockerfile")
	var froms []instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			froms = append(froms, in)
		}
	}
	if len(froms) != 2 {
		t.Fatalf("%d FROM stages, want 2 (build, final)", len(froms))
	}
	_, buildFrom := flagsAndRest(froms[0].args)
	if f := strings.Fields(buildFrom); len(f) != 3 || !strings.HasPrefix(f[0], "golang:") || !strings.EqualFold(f[1], "AS") {
		t.Errorf("first stage %q: want golang:... AS name", froms[0].args)
	} else if !slices.ContainsFunc(ins, func(in instruction) bool { return in.cmd == "COPY" && strings.Contains(in.args, "--from="+f[2]) }) {
		t.Errorf("the final stage does not COPY --from=%s", f[2])
	}
	final := strings.Fields(froms[1].args)[0]
	if !strings.HasPrefix(final, "gcr.io/distroless/static") || !strings.HasSuffix(final, ":nonroot") {
		t.Errorf("final image %q, want gcr.io/distroless/static...:nonroot", final)
	}

	finalStage := slices.DeleteFunc(slices.Clone(ins), func(in instruction) bool { return in.line < froms[1].line })
	byCmd := func(cmd string) []instruction {
		return slices.DeleteFunc(slices.Clone(finalStage), func(in instruction) bool { return in.cmd != cmd })
	}

	var built bool
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			built = true
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/sentinel-proxy", "/out/sentinel-proxy"} {
				if !strings.Contains(in.args, want) {
					t.Errorf("go build (line %d) lacks %s", in.line, want)
				}
			}
		}
	}
	if !built {
		t.Errorf("no RUN go build")
	}

	users := byCmd("USER")
	if len(users) != 1 {
		t.Fatalf("final stage has %d USER instructions, want 1", len(users))
	}
	uid, _, _ := strings.Cut(users[0].args, ":")
	if n, err := strconv.Atoi(uid); (err == nil && n == 0) || uid == "root" {
		t.Errorf("USER %s is root", users[0].args)
	}

	var entrypoint []string
	if e := byCmd("ENTRYPOINT"); len(e) != 1 || json.Unmarshal([]byte(e[0].args), &entrypoint) != nil || len(entrypoint) != 1 {
		t.Fatalf("ENTRYPOINT: want one, in exec form, the binary alone; got %+v", e)
	}

	hcs := byCmd("HEALTHCHECK")
	if len(hcs) != 1 {
		t.Fatalf("final stage has %d HEALTHCHECK instructions, want 1", len(hcs))
	}
	opts, rest := flagsAndRest(hcs[0].args)
	for _, k := range []string{"interval", "timeout", "start-period"} {
		if d, err := time.ParseDuration(opts[k]); err != nil || d <= 0 {
			t.Errorf("HEALTHCHECK --%s=%q is not a positive duration", k, opts[k])
		}
	}
	if n, err := strconv.Atoi(opts["retries"]); err != nil || n < 1 {
		t.Errorf("HEALTHCHECK --retries=%q", opts["retries"])
	}
	var cmd []string
	kw, jsonArgs, _ := strings.Cut(rest, " ")
	if kw != "CMD" || json.Unmarshal([]byte(jsonArgs), &cmd) != nil {
		t.Fatalf("HEALTHCHECK %q: want CMD in exec form (the image has no shell)", rest)
	}
	if cmd[0] != entrypoint[0] {
		t.Errorf("HEALTHCHECK runs %s, the image's binary is %s", cmd[0], entrypoint[0])
	}
	hcTimeout, _ := time.ParseDuration(opts["timeout"])
	if d := healthFlag(t, cmd, "--timeout", "2s"); d >= hcTimeout {
		t.Errorf("health --timeout %v is not below HEALTHCHECK --timeout %v", d, hcTimeout)
	}

	// The same check as the compose file's, and its URL reaches the admin
	// endpoint the compose example configures.
	f := loadCompose(t)
	if got := f.Services["proxy"].Healthcheck.Test; !slices.Equal(got, append([]string{"CMD"}, cmd...)) {
		t.Errorf("compose proxy healthcheck %q differs from the Dockerfile's %q", got, cmd)
	}
	u := healthURL(t, append([]string{"CMD"}, cmd...))
	cfg, err := config.Load([]string{"--config", proxyConfig}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, port, _ := net.SplitHostPort(cfg.Admin); port != u.Port() {
		t.Errorf("HEALTHCHECK URL %s does not reach admin %q of %s", u, cfg.Admin, proxyConfig)
	}
	var exposed []string
	for _, e := range byCmd("EXPOSE") {
		exposed = append(exposed, strings.Fields(e.args)...)
	}
	for _, p := range []string{u.Port(), "6380"} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}
}

// TestComposePHPApp checks the PHP image, php.ini and index.php: phpredis
// installed, sessions in Redis through the proxy service with the password
// from the environment, locking on, and a read timeout above the proxy's
// hold timeout. Where php is installed, PHP's own INI parser reads php.ini.
func TestComposePHPApp(t *testing.T) {
	ins := parseDockerfile(t, "php/Dockerfile")
	if ins[0].cmd != "FROM" || !strings.HasPrefix(ins[0].args, "php:8.2-apache") {
		t.Errorf("php/Dockerfile FROM %q, want php:8.2-apache", ins[0].args)
	}
	if !slices.ContainsFunc(ins, func(in instruction) bool {
		return in.cmd == "RUN" && strings.Contains(in.args, "pecl install redis") && strings.Contains(in.args, "docker-php-ext-enable redis")
	}) {
		t.Errorf("php/Dockerfile does not pecl install and enable redis")
	}

	ini := readINI(t, "php/php.ini")
	want := map[string]string{
		"session.save_handler":          "redis",
		"redis.session.locking_enabled": "1",
	}
	for k, v := range want {
		if ini[k] != v {
			t.Errorf("php.ini %s = %q, want %q", k, ini[k], v)
		}
	}
	u, err := url.Parse(ini["session.save_path"])
	if err != nil {
		t.Fatalf("session.save_path: %v", err)
	}
	if u.Scheme != "tcp" || u.Hostname() != "proxy" || u.Port() != "6380" {
		t.Errorf("session.save_path %s: want tcp://proxy:6380, the proxy service and its listen port", u)
	}
	q := u.Query()
	if q.Get("auth") != "${REDIS_PASSWORD}" {
		t.Errorf("session.save_path auth=%q, want ${REDIS_PASSWORD} (the environment)", q.Get("auth"))
	}
	if _, err := strconv.Atoi(q.Get("database")); err != nil {
		t.Errorf("session.save_path database=%q is not a number", q.Get("database"))
	}
	cfg, err := config.Load([]string{"--config", proxyConfig}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rt, err := strconv.ParseFloat(q.Get("read_timeout"), 64); err != nil || time.Duration(rt*float64(time.Second)) <= cfg.HoldTimeout {
		t.Errorf("session.save_path read_timeout=%q is not above the proxy's hold_timeout %v", q.Get("read_timeout"), cfg.HoldTimeout)
	}
	retries, _ := strconv.Atoi(ini["redis.session.lock_retries"])
	wait, _ := strconv.Atoi(ini["redis.session.lock_wait_time"])
	if lockWait := time.Duration(retries*wait) * time.Microsecond; lockWait <= cfg.HoldTimeout {
		t.Errorf("session lock wait %v (lock_retries x lock_wait_time) is not above hold_timeout %v", lockWait, cfg.HoldTimeout)
	}

	php, err := exec.LookPath("php")
	if err != nil {
		t.Log("php not installed: php.ini checked as text only")
		return
	}
	// PHP expands ${REDIS_PASSWORD} from the environment inside the quoted
	// value; -n: no other ini files.
	cmd := exec.Command(php, "-n", "-c", "php/php.ini", "-r", `echo ini_get("session.save_path");`)
	cmd.Env = append(os.Environ(), "REDIS_PASSWORD=pw-from-env_1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("php -c php.ini: %v\n%s", err, out)
	}
	if got := string(out); !strings.Contains(got, "tcp://proxy:6380?auth=pw-from-env_1&database=") {
		t.Errorf("PHP reads session.save_path as %q; want the password from the environment", got)
	}
	if out, err := exec.Command(php, "-l", "php/index.php").CombinedOutput(); err != nil {
		t.Errorf("php -l index.php: %v\n%s", err, out)
	}
}

// readINI reads key = value lines; quoted values are unquoted.
func readINI(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ini := make(map[string]string)
	for l := range strings.SplitSeq(string(b), "\n") {
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, ";") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: %q is not key = value", path, l)
		}
		v = strings.TrimSpace(v)
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		ini[strings.TrimSpace(k)] = v
	}
	return ini
}

// healthURL returns the --url of a `sentinel-proxy health` health check.
func healthURL(t *testing.T, test []string) *url.URL {
	t.Helper()
	if len(test) < 3 || test[0] != "CMD" || test[1] != "/usr/local/bin/sentinel-proxy" || test[2] != "health" {
		t.Fatalf("healthcheck %q is not CMD /usr/local/bin/sentinel-proxy health ...", test)
	}
	i := slices.Index(test, "--url")
	if i < 0 || i+1 >= len(test) {
		t.Fatalf("healthcheck %q has no --url", test)
	}
	u, err := url.Parse(test[i+1])
	if err != nil {
		t.Fatalf("healthcheck --url: %v", err)
	}
	return u
}

// healthFlag returns the duration given to flag in args, or def.
func healthFlag(t *testing.T, args []string, flag, def string) time.Duration {
	t.Helper()
	v := def
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		v = args[i+1]
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s %q: %v", flag, v, err)
	}
	return d
}
