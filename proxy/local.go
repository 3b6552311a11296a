package proxy

import (
	"bytes"
	"strconv"
	"time"
)

// What the proxy decides before forwarding a command: proxy-terminated
// authentication, the command policy, CLIENT KILL, and transactions that a
// refused command spoiled. vet runs over a batch in order, before any of it
// is forwarded, so its state (authenticated, MULTI open) follows the batch.

const (
	errNoAuth      = "NOAUTH Authentication required."
	errNoAuthHello = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
	errWrongPass   = "WRONGPASS invalid username-password pair or user is disabled."
	errClientKill  = "NOPERM CLIENT KILL through sentinel-proxy can only close this client's own server connection: CLIENT KILL ID <the id CLIENT ID returned>"
	errExecAbort   = "EXECABORT Transaction discarded because of previous errors."
	okReply        = "+OK\r\n"
)

// vet decides how the session handles cmd: it may turn info into a local
// answer (kindRefused, kindLocalOK, kindAbortTx) or rewrite cmd. inMulti
// tracks MULTI through the batch.
func (s *session) vet(cmd *Command, info *cmdInfo, st *Settings, inMulti *bool) {
	if st.Auth != nil && !s.vetAuth(cmd, info, st.Auth) || info.kind == kindRefused {
		return
	}
	if r := st.Policy.refusal(cmd.Args); r != "" {
		*info = cmdInfo{kind: kindRefused, refusal: r, class: info.class}
		if *inMulti {
			s.txRefused = true
		}
		return
	}
	if s.srv.cl != nil && s.vetCluster(cmd, info, *inMulti) {
		return
	}
	switch info.kind {
	case kindClientKill:
		if s.ownClientKill(cmd.Args) {
			// Redis skips the caller unless told not to.
			args := append(cmd.Args[:4:4], []byte("SKIPME"), []byte("no"))
			*cmd = Command{Raw: appendArgs(nil, args), Args: args}
			info.kind = kindPlain
		} else {
			*info = cmdInfo{kind: kindRefused, refusal: errClientKill, class: info.class}
			if *inMulti {
				s.txRefused = true
			}
		}
	case kindMulti:
		*inMulti = true
	case kindExec:
		if *inMulti && s.txRefused {
			info.kind = kindAbortTx
		}
		*inMulti, s.txRefused = false, false
	case kindDiscard, kindReset:
		*inMulti, s.txRefused = false, false
	}
}

// vetAuth applies proxy-terminated authentication. It reports whether the
// command goes on to the policy check.
func (s *session) vetAuth(cmd *Command, info *cmdInfo, a *Auth) bool {
	args := cmd.Args
	refuse := func(text string) bool {
		*info = cmdInfo{kind: kindRefused, refusal: text, class: classConnection}
		return false
	}
	switch info.kind {
	case kindQuit:
		return false
	case kindAuth:
		var user, pass string
		switch len(args) {
		case 2:
			user, pass = "default", string(args[1])
		case 3:
			user, pass = string(args[1]), string(args[2])
		default:
			return refuse("ERR wrong number of arguments for 'auth' command")
		}
		if !s.authenticate(a, user, pass) {
			return refuse(errWrongPass)
		}
		*info = cmdInfo{kind: kindLocalOK, class: classConnection}
		return false
	case kindHello:
		// HELLO [protover [AUTH user pass] [SETNAME name]]: check AUTH here
		// and forward the rest.
		for i := 2; i < len(args); i++ {
			if bytes.EqualFold(args[i], []byte("auth")) && i+2 < len(args) {
				if !s.authenticate(a, string(args[i+1]), string(args[i+2])) {
					return refuse(errWrongPass)
				}
				rest := append(append([][]byte{}, args[:i]...), args[i+3:]...)
				*cmd = Command{Raw: appendArgs(nil, rest), Args: rest}
				return true
			}
			if bytes.EqualFold(args[i], []byte("setname")) {
				i++
			}
		}
		if !s.authed {
			return refuse(errNoAuthHello)
		}
		return true
	case kindReset:
		if s.authed {
			s.deauthAfterReset = true
		}
		return true
	}
	if !s.authed {
		return refuse(errNoAuth)
	}
	return true
}

// authenticate checks credentials against the proxy's users; failures are
// counted and slowed per client address.
func (s *session) authenticate(a *Auth, user, pass string) bool {
	if a.check(user, pass) {
		s.srv.authLim.succeeded(s.conn.RemoteAddr())
		if !s.authed {
			s.authed = true
			s.state = a.backendState(s.state)
			s.keyAddr = ""
		}
		return true
	}
	s.srv.m.rejectedAuth.Inc()
	if d := s.srv.authLim.failed(s.conn.RemoteAddr(), time.Now()); d > 0 {
		time.Sleep(d)
	}
	return false
}

// ownClientKill reports whether CLIENT KILL targets only this session's own
// pinned server connection: CLIENT KILL ID <id> with the id CLIENT ID
// returned on it.
func (s *session) ownClientKill(args [][]byte) bool {
	if len(args) != 4 || !bytes.EqualFold(args[2], []byte("id")) || s.pinned == nil || s.clientID == 0 {
		return false
	}
	id, err := strconv.ParseInt(string(args[3]), 10, 64)
	return err == nil && id == s.clientID
}

// abortTx answers EXEC after a command of the transaction was refused: the
// server's queue is discarded and the client gets EXECABORT, as Redis does
// after a queued command was rejected.
func (s *session) abortTx() {
	if b := s.pinned; b != nil {
		if _, err := b.nc.Write([]byte(discardCmd)); err != nil {
			s.lost(b)
		} else if _, err := s.skipReply(b); err != nil {
			s.lost(b)
		}
	}
	s.endTx()
	if s.pinned != nil {
		b := s.pinned
		s.setPinned(nil)
		s.release(b)
	}
	s.writeError(errExecAbort)
}

// vetCluster applies what a cluster group changes: SELECT of any db but 0
// is refused, as Redis Cluster does, and CLIENT SETNAME is answered by the
// proxy (a name would pin the session to one master). It reports whether
// it decided.
func (s *session) vetCluster(cmd *Command, info *cmdInfo, inMulti bool) bool {
	args := cmd.Args
	switch {
	case info.kind == kindSelect && len(args) == 2 && string(args[1]) != "0":
		*info = cmdInfo{kind: kindRefused, refusal: errSelectCluster, class: info.class}
		if inMulti {
			s.txRefused = true
		}
		return true
	case info.kind == kindPin && len(args) == 3 && bytes.EqualFold(args[1], []byte("setname")) && !inMulti:
		*info = cmdInfo{kind: kindLocalOK, class: info.class}
		return true
	}
	return false
}
