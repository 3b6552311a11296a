package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net"
	"sync"
	"time"
)

// User is one proxy-side user for proxy-terminated authentication. Give
// Password or PasswordSHA256 (hex, as Redis ACL's #<hash>).
type User struct {
	Name           string
	Password       string
	PasswordSHA256 string
}

// Auth terminates authentication in the proxy: clients AUTH to it, and
// their traffic uses the backend credentials. A nil *Auth means
// passthrough (Redis checks the clients' own AUTH).
type Auth struct {
	users map[string][sha256.Size]byte
	// BackendUser and BackendPassword are what authenticated clients'
	// traffic uses on the data nodes ("" user: default; "" password: none).
	backendUser, backendPass string
}

// NewAuth builds an Auth from users (a "default" user is what a one-argument
// AUTH checks) and the backend credentials.
func NewAuth(users []User, backendUser, backendPass string) (*Auth, error) {
	a := &Auth{users: make(map[string][sha256.Size]byte), backendUser: backendUser, backendPass: backendPass}
	for _, u := range users {
		var h [sha256.Size]byte
		switch {
		case u.PasswordSHA256 != "":
			b, err := hex.DecodeString(u.PasswordSHA256)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("user %q: password_sha256 is not 64 hex digits", u.Name)
			}
			copy(h[:], b)
		default:
			h = sha256.Sum256([]byte(u.Password))
		}
		a.users[u.Name] = h
	}
	if len(a.users) == 0 {
		return nil, fmt.Errorf("proxy auth needs at least one user or password")
	}
	return a, nil
}

// check reports whether pass is user's password, in constant time per user.
func (a *Auth) check(user, pass string) bool {
	want, ok := a.users[user]
	got := sha256.Sum256([]byte(pass))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1 && ok
}

// backendState is the connection state of an authenticated client.
func (a *Auth) backendState(st connState) connState {
	st.user, st.pass = "", ""
	if a.backendPass != "" {
		st.user, st.pass = a.backendUser, a.backendPass
		if st.user == "" {
			st.user = "default"
		}
	}
	return st
}

// authLimiter counts failed AUTH attempts per client address and says how
// long to delay the next failure's answer: nothing for the first few, then
// doubling up to maxAuthDelay. Entries expire after authWindow; the table is
// bounded.
type authLimiter struct {
	mu    sync.Mutex
	fails map[string]authFails
}

type authFails struct {
	n    int
	last time.Time
}

const (
	authFreeFails   = 3
	authWindow      = time.Minute
	maxAuthDelay    = 2 * time.Second
	maxAuthLimiters = 100_000
)

func newAuthLimiter() *authLimiter { return &authLimiter{fails: make(map[string]authFails)} }

// failed records a failure from addr and returns the delay to apply.
func (l *authLimiter) failed(addr net.Addr, now time.Time) time.Duration {
	host := hostOf(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.fails[host]
	if now.Sub(f.last) > authWindow {
		f.n = 0
	}
	f.n++
	f.last = now
	if len(l.fails) >= maxAuthLimiters {
		for k, v := range l.fails { // drop expired entries, or any if none
			if now.Sub(v.last) > authWindow || len(l.fails) >= maxAuthLimiters {
				delete(l.fails, k)
			}
			if len(l.fails) < maxAuthLimiters/2 {
				break
			}
		}
	}
	l.fails[host] = f
	if f.n <= authFreeFails {
		return 0
	}
	d := 50 * time.Millisecond << min(f.n-authFreeFails-1, 10)
	return min(d, maxAuthDelay)
}

// succeeded forgets addr's failures.
func (l *authLimiter) succeeded(addr net.Addr) {
	host := hostOf(addr)
	l.mu.Lock()
	delete(l.fails, host)
	l.mu.Unlock()
}

func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(addr.String()); err == nil {
		return h
	}
	return addr.String()
}
