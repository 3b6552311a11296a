package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// ValidationError is the error Validate returns. It lists every problem
// found, not just the first, so an operator can fix them in one pass.
type ValidationError struct {
	// Problems are one line each, in a stable order, each starting with the
	// file key it is about (e.g. `hold_timeout: ...`, `groups[1] (b): ...`).
	Problems []string
}

// Error returns "invalid configuration" followed by one problem per line.
func (e *ValidationError) Error() string {
	return "invalid configuration:\n  - " + strings.Join(e.Problems, "\n  - ")
}

// Validate checks c and returns a *ValidationError listing every problem, or
// nil. Problems Load found in the config file (unknown keys, durations
// without a unit) are listed first.
func (c Config) Validate() error {
	p := slices.Clone(c.problems)
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	// Cluster groups need no sentinels; a configuration without groups
	// is told about both.
	if len(c.Sentinels) == 0 && (len(c.Groups) == 0 || slices.ContainsFunc(c.Groups, func(g Group) bool { return g.MasterName != "" })) {
		add("sentinels: none given; set --sentinels, %sSENTINELS or sentinels in the config file", EnvPrefix)
	}
	firstSentinel := make(map[string]int)
	for i, s := range c.Sentinels {
		if err := checkAddr(s, false); err != nil {
			add("sentinels[%d]: %v", i, err)
			continue
		}
		if j, dup := firstSentinel[strings.ToLower(s)]; dup {
			add("sentinels[%d]: %q is the same as sentinels[%d]", i, s, j)
			continue
		}
		firstSentinel[strings.ToLower(s)] = i
	}

	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		add("log_level: %q is not one of debug, info, warn, error", c.LogLevel)
	}
	if !slices.Contains([]string{"console", "json"}, c.LogFormat) {
		add("log_format: %q is not one of console, json", c.LogFormat)
	}

	// Zero is meaningful for the hold and drain timeouts (no wait), and a
	// busy loop or an instant failure for the others.
	for _, d := range []struct {
		key    string
		val    time.Duration
		zeroOK bool
	}{
		{"dial_timeout", c.DialTimeout, false},
		{"hold_timeout", c.HoldTimeout, true},
		{"poll_interval", c.PollInterval, false},
		{"query_timeout", c.QueryTimeout, false},
		{"drain_timeout", c.DrainTimeout, true},
	} {
		switch {
		case d.val < 0:
			add("%s: %v is negative", d.key, d.val)
		case d.val == 0 && !d.zeroOK:
			add("%s: must be greater than 0", d.key)
		}
	}

	p = append(p, c.checkListeners()...)
	p = append(p, c.checkSecurity()...)
	if len(p) == 0 {
		return nil
	}
	return &ValidationError{Problems: p}
}

// listener is one address the process will listen on, for conflict checks.
type listener struct {
	what       string // how problems name it: "admin", "groups[0] (mymaster)"
	host, port string
}

// checkListeners checks the groups and the admin address: names present and
// unique, addresses well formed, no two of them on the same port of the same
// (or a wildcard) host.
func (c Config) checkListeners() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }

	if len(c.Groups) == 0 {
		add("groups: none given; set --master-name (or --cluster-nodes) and --listen, or groups in the config file")
	}
	var ls []listener
	if c.Admin != "" {
		if err := checkAddr(c.Admin, true); err != nil {
			add("admin: %v", err)
		} else {
			host, port, _ := net.SplitHostPort(c.Admin)
			ls = append(ls, listener{"admin", host, port})
		}
	}
	firstName := make(map[string]int)
	for i, g := range c.Groups {
		what := fmt.Sprintf("groups[%d] (%s)", i, g.Label())
		if g.Label() == "" {
			what = fmt.Sprintf("groups[%d] (listen %s)", i, g.Listen)
		}
		p = append(p, checkBackend(what, g)...)
		switch name := g.Label(); {
		case name == "":
		case badName(name) && g.Name != "":
			add("groups[%d]: name %q contains spaces or control characters", i, name)
		case badName(name):
			add("groups[%d]: master_name %q contains spaces or control characters", i, name)
		default:
			if j, dup := firstName[name]; dup {
				add("%s: %s", what, sameName(g, j))
			} else {
				firstName[name] = i
			}
		}
		if g.Listen == "" {
			add("%s: listen is empty (--listen)", what)
			continue
		}
		if err := checkAddr(g.Listen, true); err != nil {
			add("%s: listen: %v", what, err)
			continue
		}
		host, port, _ := net.SplitHostPort(g.Listen)
		ls = append(ls, listener{what, host, port})
	}

	for i, a := range ls {
		for _, b := range ls[:i] {
			if a.conflicts(b) {
				add("%s: listen address %s is also used by %s", a.what, net.JoinHostPort(a.host, a.port), b.what)
				break
			}
		}
	}
	return p
}

// checkBackend checks that g has exactly one of master_name and
// cluster_nodes, and its cluster nodes' addresses.
func checkBackend(what string, g Group) []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	switch {
	case g.MasterName == "" && !g.IsCluster():
		add("%s: neither master_name (--master-name) nor cluster_nodes (--cluster-nodes) is set", what)
	case g.MasterName != "" && g.IsCluster():
		add("%s: both master_name and cluster_nodes are set; a group is a Sentinel master or a Redis Cluster, not both", what)
	case badName(g.MasterName) && g.Name != "":
		add("%s: master_name %q contains spaces or control characters", what, g.MasterName)
	}
	first := make(map[string]int)
	for j, n := range g.ClusterNodes {
		if err := checkAddr(n, false); err != nil {
			add("%s: cluster_nodes[%d]: %v", what, j, err)
			continue
		}
		if k, dup := first[strings.ToLower(n)]; dup {
			add("%s: cluster_nodes[%d]: %q is the same as cluster_nodes[%d]", what, j, n, k)
			continue
		}
		first[strings.ToLower(n)] = j
	}
	return p
}

// badName reports whether a group or master name has spaces or control
// characters, which would garble logs and metric labels.
func badName(name string) bool {
	return strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) })
}

// sameName words a group name already used by groups[j], naming the key
// the name came from.
func sameName(g Group, j int) string {
	switch {
	case g.Name != "":
		return fmt.Sprintf("name is the same as groups[%d]", j)
	case g.MasterName != "":
		return fmt.Sprintf("master_name is the same as groups[%d]", j)
	}
	return fmt.Sprintf("a cluster group without a name is called %q, as groups[%d] is; give each cluster group a name of its own (name: ...)", DefaultClusterName, j)
}

// conflicts reports whether l and o cannot both be bound: same port, and the
// same host or a wildcard on either side. Port 0 (any free port) never
// conflicts. Host names are compared as written, not resolved.
func (l listener) conflicts(o listener) bool {
	if l.port != o.port || l.port == "0" {
		return false
	}
	return strings.EqualFold(l.host, o.host) || isWildcard(l.host) || isWildcard(o.host)
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}

// checkAddr checks a host:port address without resolving it. IPv6 hosts must
// be bracketed ([::1]:26379). A listen address may have an empty host (every
// interface) and port 0; a sentinel address may not.
func checkAddr(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q: %s (want host:port, IPv6 as [::1]:26379)", addr, ae.Err)
		}
		return fmt.Errorf("%q: %w", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	switch {
	case port == "":
		return fmt.Errorf("%q: missing port", addr)
	case err != nil:
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	case n == 0 && !listen:
		return fmt.Errorf("%q: port 0 is not a valid destination", addr)
	}
	bracketed := strings.HasPrefix(addr, "[")
	if host == "" {
		if listen && !bracketed {
			return nil
		}
		return fmt.Errorf("%q: host is empty", addr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is6() != bracketed {
			return fmt.Errorf("%q: brackets are for IPv6 addresses only", addr)
		}
		return nil
	}
	if bracketed {
		return fmt.Errorf("%q: %q is not an IPv6 address", addr, host)
	}
	if !validHostname(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a valid host name", addr, host)
	}
	return nil
}

// validHostname reports whether host is a syntactically valid DNS name.
// Underscores are allowed (container names use them). A numeric last label
// is refused: "10.0.0.300" is a mistyped IP address, not a name.
func validHostname(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}
