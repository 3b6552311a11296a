package integration

import (
	"context"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// python is the interpreter that has python3-redis (redis-py 4.3.4); a
// pyenv python3 earlier on PATH may not.
const python = "/usr/bin/python3"

// badOutput matches what PHP and Python print when something went wrong
// even though the script carried on.
var badOutput = regexp.MustCompile(`(?i)\b(warning|fatal|notice|deprecated|traceback|exception)\b`)

// TestPythonRedis runs testdata/redis_py.py (redis-py: basic commands,
// pipelines with and without MULTI, WATCH, pub/sub, StrictRedis in db 3)
// through the proxy.
func TestPythonRedis(t *testing.T) {
	for _, withPassword := range []bool{false, true} {
		t.Run("password="+strconv.FormatBool(withPassword), func(t *testing.T) {
			st := sharedStack(t, withPassword)
			p := keyPrefix(t)
			r := run(t, time.Minute, nil, python, "testdata/redis_py.py", st.Host(), st.Port(), st.Password, p)
			out := r.Combined()
			if r.Err != nil || !strings.HasSuffix(r.Stdout, "PASS\n") || badOutput.MatchString(out) {
				t.Fatalf("redis_py.py: %v\n%s", r.Err, clip(out))
			}
			// The db-3 key is in db 3 on the master, and only there.
			ctx := testContext(t, 10*time.Second)
			checkOnlyIn(ctx, t, st, p+"db3", 3, "three")
		})
	}
}

// checkOnlyIn fails t unless key holds want in db on the master and does
// not exist in db 0.
func checkOnlyIn(ctx context.Context, t *testing.T, st *stack, key string, db int, want string) {
	t.Helper()
	in, zero := st.Direct(st.Topo.Master(), db), st.Direct(st.Topo.Master(), 0)
	defer in.Close()
	defer zero.Close()
	if v, err := in.Get(ctx, key).Result(); err != nil || v != want {
		t.Errorf("db %d on the master: GET %s = %q, %v; want %q", db, key, v, err, want)
	}
	if db != 0 {
		if n, err := zero.Exists(ctx, key).Result(); err != nil || n != 0 {
			t.Errorf("db 0 on the master: EXISTS %s = %d, %v; want 0", key, n, err)
		}
	}
}

// php runs a PHP script with every error, warning and notice printed.
func php(t *testing.T, ini []string, script string, args ...string) execResult {
	t.Helper()
	argv := []string{"-d", "display_errors=1", "-d", "log_errors=0", "-d", "error_reporting=-1"}
	for _, s := range ini {
		argv = append(argv, "-d", s)
	}
	argv = append(argv, script)
	return run(t, 30*time.Second, nil, "php", append(argv, args...)...)
}

// TestPHPSessions writes a session in one PHP process and reads it back in
// another, through phpredis's session handler pointed at the proxy with
// `database=2` (and `auth` on the password stack), with and without session
// locking. The session key must be in db 2 on the master and nowhere in db 0.
func TestPHPSessions(t *testing.T) {
	for _, withPassword := range []bool{false, true} {
		for _, locking := range []bool{false, true} {
			name := "password=" + strconv.FormatBool(withPassword) + "/locking=" + strconv.FormatBool(locking)
			t.Run(name, func(t *testing.T) {
				st := sharedStack(t, withPassword)
				q := url.Values{"database": {"2"}}
				if withPassword {
					q.Set("auth", st.Password)
				}
				savePath := "tcp://" + st.Addr + "?" + q.Encode()
				ini := []string{
					"session.save_handler=redis",
					`session.save_path="` + savePath + `"`,
					"redis.session.locking_enabled=" + map[bool]string{false: "0", true: "1"}[locking],
				}
				if locking {
					// Strict mode makes phpredis check that the id exists.
					ini = append(ini, "session.use_strict_mode=1")
				}
				value := "v-" + strconv.FormatInt(time.Now().UnixNano(), 36)

				w := php(t, ini, "testdata/session.php", "write", value)
				if w.Err != nil || badOutput.MatchString(w.Combined()) || !strings.HasSuffix(w.Stdout, "done\n") {
					t.Fatalf("request 1: %v\n%s", w.Err, w.Combined())
				}
				id := regexp.MustCompile(`(?m)^id=([A-Za-z0-9,-]+)$`).FindStringSubmatch(w.Stdout)
				if id == nil {
					t.Fatalf("request 1 printed no session id:\n%s", w.Stdout)
				}
				sid := id[1]
				key := "PHPREDIS_SESSION:" + sid

				ctx := testContext(t, 10*time.Second)
				db2, db0 := st.Direct(st.Topo.Master(), 2), st.Direct(st.Topo.Master(), 0)
				defer db2.Close()
				defer db0.Close()
				data, err := db2.Get(ctx, key).Result()
				if err != nil || !strings.Contains(data, `value|s:`+strconv.Itoa(len(value))+`:"`+value+`"`) {
					t.Fatalf("db 2 on the master: GET %s = %q, %v; want the session data with %q", key, data, err, value)
				}
				if ttl := db2.TTL(ctx, key).Val(); ttl <= 0 {
					t.Errorf("session key TTL = %v, want the gc_maxlifetime expiry", ttl)
				}

				r := php(t, ini, "testdata/session.php", "read", sid)
				if r.Err != nil || badOutput.MatchString(r.Combined()) || !strings.HasSuffix(r.Stdout, "done\n") {
					t.Fatalf("request 2: %v\n%s", r.Err, r.Combined())
				}
				if !strings.Contains(r.Stdout, "value="+value+"\n") || !strings.Contains(r.Stdout, "counter=2\n") {
					t.Fatalf("request 2 read back:\n%s\nwant value=%s and counter=2", r.Stdout, value)
				}
				if data := db2.Get(ctx, key).Val(); !strings.Contains(data, "counter|i:2;") {
					t.Errorf("session data after request 2 = %q, want counter 2", data)
				}
				// The lock was released, and nothing of this session is
				// in db 0.
				if n := db2.Exists(ctx, key+"_LOCK").Val(); n != 0 {
					t.Errorf("lock key %s_LOCK still exists after both requests", key)
				}
				leaked, err := db0.Keys(ctx, "*"+sid+"*").Result()
				if err != nil || len(leaked) != 0 {
					t.Errorf("db 0 on the master has keys of the session: %q, %v", leaked, err)
				}
			})
		}
	}
}

// TestPHPRedis runs testdata/phpredis.php (connect, auth, select, set/get,
// pipeline, multi/exec, watch, eval) through the proxy.
func TestPHPRedis(t *testing.T) {
	for _, withPassword := range []bool{false, true} {
		t.Run("password="+strconv.FormatBool(withPassword), func(t *testing.T) {
			st := sharedStack(t, withPassword)
			r := php(t, nil, "testdata/phpredis.php", st.Host(), st.Port(), st.Password, keyPrefix(t))
			if r.Err != nil || !strings.HasSuffix(r.Stdout, "PASS\n") || badOutput.MatchString(r.Combined()) {
				t.Fatalf("phpredis.php: %v\n%s", r.Err, r.Combined())
			}
			// The script's last key is in db 4 on the master, not in db 0.
			checkOnlyIn(testContext(t, 10*time.Second), t, st, keyPrefix(t)+"final", 4, "db4")
		})
	}
}
