package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateSecurity(t *testing.T) {
	pem := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(pem, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		fn   func(*Config)
		want string // "" means valid
	}{
		{"users with password and hash", func(c *Config) {
			c.Users = []User{{Name: "app", PasswordSHA256: hash}, {Name: "ops", Password: "pw"}}
		}, ""},
		{"user without password", func(c *Config) { c.Users = []User{{Name: "app"}} }, "users[0] (app): no password"},
		{"user with both", func(c *Config) { c.Users = []User{{Name: "app", Password: "a", PasswordSHA256: hash}} }, "not both"},
		{"bad hash", func(c *Config) { c.Users = []User{{Name: "app", PasswordSHA256: "abc"}} }, "64 hexadecimal digits"},
		{"duplicate user", func(c *Config) {
			c.Users = []User{{Name: "a", Password: "x"}, {Name: "a", Password: "y"}}
		}, "users[1] (a): name is the same as users[0]"},
		{"default user twice", func(c *Config) {
			c.Password = "p"
			c.Users = []User{{Name: "default", Password: "x"}}
		}, "already set by password"},
		{"tls pair", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = pem, pem }, ""},
		{"tls cert without key", func(c *Config) { c.TLSCertFile = pem }, "tls_cert_file and tls_key_file: give both"},
		{"tls missing file", func(c *Config) { c.TLSCertFile, c.TLSKeyFile = pem, pem+".nope" }, "tls_key_file: open"},
		{"client ca without cert", func(c *Config) { c.TLSClientCAFile = pem }, "needs tls_cert_file"},
		{"tls version", func(c *Config) { c.TLSMinVersion = "1.0" }, `tls_min_version: "1.0"`},
		{"backend tls files without tls", func(c *Config) { c.BackendTLSCAFile = pem }, "backend_tls: files are set but backend_tls is false"},
		{"sentinel tls", func(c *Config) { c.SentinelTLS, c.SentinelTLSCAFile = true, pem }, ""},
		{"policy", func(c *Config) { c.CommandPolicy = "maybe" }, `command_policy: "maybe"`},
		{"allow without list", func(c *Config) { c.CommandPolicy = "allow" }, "allow with no allow_commands"},
		{"allow with list", func(c *Config) { c.CommandPolicy, c.AllowCommands = "allow", []string{"get", "set", "config|get"} }, ""},
		{"bad command entry", func(c *Config) { c.DenyCommands = []string{"config|set|x"} }, `deny_commands[0]: "config|set|x"`},
		{"group policy", func(c *Config) { c.Groups[0].CommandPolicy = "open" }, `groups[0] (mymaster).command_policy: "open"`},
		{"max clients", func(c *Config) { c.MaxClients = 0 }, "max_clients: 0"},
		{"bulk below 1mb", func(c *Config) { c.ProtoMaxBulkLen = 1000 }, "proto_max_bulk_len: 1000"},
		{"negative idle", func(c *Config) { c.IdleTimeout = -1 }, "idle_timeout: -1ns is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := valid(tt.fn).Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want a problem containing %q", err, tt.want)
			}
			n := 0
			for _, p := range ve.Problems {
				if strings.Contains(p, tt.want) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("problems = %q, want exactly one containing %q", ve.Problems, tt.want)
			}
		})
	}
}
