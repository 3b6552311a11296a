package proxy

import (
	"bytes"
	"fmt"
	"strings"
)

// DefaultDenied are the commands a group refuses unless its policy says
// otherwise: they change the topology behind Sentinel's back, stop or
// reconfigure the server, or show every client's data (MONITOR). Entries
// are command names or command|subcommand, as in Redis ACL rules.
var DefaultDenied = []string{
	"replicaof", "slaveof", "failover", "shutdown", "debug",
	"sync", "psync", "cluster", "module", "monitor",
	"config|set", "config|rewrite", "config|resetstat",
	"acl|setuser", "acl|deluser", "acl|load", "acl|save",
	"client|pause", "client|unpause", "client|no-evict",
}

// alwaysAllowed are the connection basics an allow-list policy keeps.
var alwaysAllowed = []string{"auth", "hello", "quit", "ping", "reset", "select", "echo"}

// Policy decides which commands a group forwards. The zero value (and nil)
// refuses DefaultDenied.
type Policy struct {
	allowList bool                // only allowed commands pass
	allowed   map[string]struct{} // names and name|sub
	denied    map[string]struct{}
	withSub   map[string]struct{} // names with name|sub entries in either map
	group     string
}

// NewPolicy builds a policy. mode is "deny" (DefaultDenied plus deny, minus
// allow) or "allow" (only allow, plus connection basics, minus deny).
// Entries are case-insensitive names or name|subcommand.
func NewPolicy(group, mode string, allow, deny []string) (*Policy, error) {
	p := &Policy{group: group, allowed: make(map[string]struct{}), denied: make(map[string]struct{})}
	switch mode {
	case "", "deny":
		for _, c := range DefaultDenied {
			p.denied[c] = struct{}{}
		}
	case "allow":
		p.allowList = true
		for _, c := range alwaysAllowed {
			p.allowed[c] = struct{}{}
		}
	default:
		return nil, fmt.Errorf("command policy %q is not deny or allow", mode)
	}
	for _, c := range allow {
		c = strings.ToLower(strings.TrimSpace(c))
		if p.allowList {
			p.allowed[c] = struct{}{}
		} else {
			delete(p.denied, c)
			p.allowed[c] = struct{}{} // an allowed subcommand beats a denied name
		}
	}
	for _, c := range deny {
		c = strings.ToLower(strings.TrimSpace(c))
		p.denied[c] = struct{}{}
		delete(p.allowed, c)
	}
	p.withSub = make(map[string]struct{})
	for _, m := range []map[string]struct{}{p.allowed, p.denied} {
		for c := range m {
			if name, _, ok := strings.Cut(c, "|"); ok {
				p.withSub[name] = struct{}{}
			}
		}
	}
	return p, nil
}

// refusal returns the error reply for a command the policy refuses, or "".
// It does not allocate.
func (p *Policy) refusal(args [][]byte) string {
	if len(args) == 0 {
		return ""
	}
	if p == nil {
		p = defaultPolicy
	}
	var nb [32]byte
	name := lower(nb[:0], args[0])
	if name == nil { // longer than any command name
		if p.allowList {
			return p.text(string(bytes.ToLower(args[0])))
		}
		return ""
	}
	if len(args) > 1 {
		if _, ok := p.withSub[string(name)]; ok {
			var fb [64]byte
			full := append(append(fb[:0], name...), '|')
			if sub := lower(full[len(full):len(full):cap(full)], args[1]); sub != nil {
				full = full[:len(full)+len(sub)]
				if _, ok := p.denied[string(full)]; ok {
					return p.text(string(full))
				}
				if _, ok := p.allowed[string(full)]; ok {
					return ""
				}
			}
		}
	}
	if _, ok := p.denied[string(name)]; ok {
		return p.text(string(name))
	}
	if p.allowList {
		if _, ok := p.allowed[string(name)]; !ok {
			return p.text(string(name))
		}
	}
	return ""
}

func (p *Policy) text(cmd string) string {
	return "NOPERM the '" + cmd + "' command is not allowed through sentinel-proxy (command policy of '" + p.group + "')"
}

var defaultPolicy, _ = NewPolicy("", "deny", nil, nil)
