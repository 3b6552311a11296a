package config

import (
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
)

// checkSecurity checks authentication, TLS, command policy and limits.
func (c Config) checkSecurity() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	names := make(map[string]int)
	for i, u := range c.Users {
		what := fmt.Sprintf("users[%d] (%s)", i, u.Name)
		switch {
		case u.Name == "":
			add("users[%d]: name is empty", i)
		case strings.ContainsFunc(u.Name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
			add("users[%d]: name %q contains spaces or control characters", i, u.Name)
		default:
			if j, dup := names[u.Name]; dup {
				add("%s: name is the same as users[%d]", what, j)
			}
			names[u.Name] = i
		}
		switch {
		case u.Password != "" && u.PasswordSHA256 != "":
			add("%s: set password or password_sha256, not both", what)
		case u.Password == "" && u.PasswordSHA256 == "":
			add("%s: no password or password_sha256", what)
		case u.PasswordSHA256 != "":
			if b, err := hex.DecodeString(u.PasswordSHA256); err != nil || len(b) != 32 {
				add("%s: password_sha256 is not 64 hexadecimal digits (printf %%s 'password' | sha256sum)", what)
			}
		}
		if u.Name == "default" && c.Password != "" {
			add("%s: the default user's password is already set by password (--password)", what)
		}
	}

	// TLS: pairs, versions, readable files.
	file := func(key, path string) {
		if path == "" {
			return
		}
		if f, err := os.Open(path); err != nil {
			add("%s: %v", key, err)
		} else {
			f.Close()
		}
	}
	pair := func(prefix, cert, key string) {
		if (cert == "") != (key == "") {
			add("%s_cert_file and %s_key_file: give both or neither", prefix, prefix)
		}
		file(prefix+"_cert_file", cert)
		file(prefix+"_key_file", key)
	}
	pair("tls", c.TLSCertFile, c.TLSKeyFile)
	file("tls_client_ca_file", c.TLSClientCAFile)
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		add("tls_client_ca_file: needs tls_cert_file and tls_key_file (the listener's own certificate)")
	}
	if !slices.Contains([]string{"1.2", "1.3"}, c.TLSMinVersion) {
		add("tls_min_version: %q is not one of 1.2, 1.3", c.TLSMinVersion)
	}
	for _, side := range []struct {
		prefix        string
		on            bool
		ca, cert, key string
	}{
		{"backend_tls", c.BackendTLS, c.BackendTLSCAFile, c.BackendTLSCertFile, c.BackendTLSKeyFile},
		{"sentinel_tls", c.SentinelTLS, c.SentinelTLSCAFile, c.SentinelTLSCertFile, c.SentinelTLSKeyFile},
	} {
		pair(side.prefix, side.cert, side.key)
		file(side.prefix+"_ca_file", side.ca)
		if !side.on && (side.ca != "" || side.cert != "") {
			add("%s: files are set but %s is false", side.prefix, side.prefix)
		}
	}

	p = append(p, checkPolicy("", c.CommandPolicy, c.AllowCommands, c.DenyCommands, false)...)
	for i, g := range c.Groups {
		p = append(p, checkPolicy(fmt.Sprintf("groups[%d] (%s).", i, g.Label()), g.CommandPolicy, g.AllowCommands, g.DenyCommands, true)...)
		if g.CommandPolicy == "allow" && len(g.AllowCommands) == 0 && len(c.AllowCommands) == 0 {
			add("groups[%d] (%s): command_policy allow with no allow_commands refuses everything", i, g.Label())
		}
	}

	if c.MaxClients < 1 {
		add("max_clients: %d must be at least 1", c.MaxClients)
	}
	if c.ProtoMaxBulkLen < 1<<20 {
		add("proto_max_bulk_len: %d is below 1048576 (1 MiB), the least Redis accepts", c.ProtoMaxBulkLen)
	}
	if c.ClientQueryBufferLimit < 1<<20 {
		add("client_query_buffer_limit: %d is below 1048576 (1 MiB), the least Redis accepts", c.ClientQueryBufferLimit)
	}
	if c.SharedConnections < 0 || c.SharedConnections > maxShared {
		add("shared_connections: %d is not between 0 and %d", c.SharedConnections, maxShared)
	}
	if c.Procs < 0 || c.Procs > maxProcs {
		add("procs: %d is not between 0 and %d", c.Procs, maxProcs)
	}
	for i, g := range c.Groups {
		if g.Sharing != "" && g.Sharing != "on" && g.Sharing != "off" {
			add("groups[%d] (%s).sharing: %q is not on, off or empty", i, g.Label(), g.Sharing)
		}
	}
	if c.PubSubOutputLimit < 0 {
		add("pubsub_output_limit: %d is negative (0 turns it off)", c.PubSubOutputLimit)
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{{"idle_timeout", c.IdleTimeout}, {"handshake_timeout", c.HandshakeTimeout}} {
		if d.val < 0 {
			add("%s: %v is negative (0 turns it off)", d.key, d.val)
		}
	}
	return p
}

// checkPolicy checks one command policy; prefix is "" at the top level and
// "groups[i] (name)." for a group, where an empty policy means "inherit".
func checkPolicy(prefix, policy string, allow, deny []string, inherit bool) []string {
	var p []string
	switch {
	case policy == "" && inherit:
	case policy == "deny", policy == "allow":
	default:
		p = append(p, fmt.Sprintf("%scommand_policy: %q is not one of deny, allow", prefix, policy))
	}
	if policy == "allow" && len(allow) == 0 && !inherit {
		p = append(p, fmt.Sprintf("%scommand_policy: allow with no allow_commands refuses everything", prefix))
	}
	for key, list := range map[string][]string{"allow_commands": allow, "deny_commands": deny} {
		for i, cmd := range list {
			name, sub, _ := strings.Cut(cmd, "|")
			if name == "" || strings.Contains(sub, "|") || strings.ContainsFunc(cmd, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
				p = append(p, fmt.Sprintf("%s%s[%d]: %q is not a command name or name|subcommand", prefix, key, i, cmd))
			}
		}
	}
	slices.Sort(p)
	return p
}

// maxProcs bounds procs, as a sanity check.
const maxProcs = 1024

// maxShared bounds shared_connections: a few connections carry any load.
const maxShared = 64
