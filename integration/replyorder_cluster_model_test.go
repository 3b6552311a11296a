package integration

import (
	"fmt"
	"strings"
)

// What the reply-order model changes for a cluster group (README, "In
// front of a Redis Cluster"): SELECT of another db is refused, CLIENT
// SETNAME keeps no name (replyorder_client_test.go), no redirect reaches a
// client outside MULTI, and the commands over the client's two hash tags
// are split by the proxy and merged.

// selectClusterText is the proxy's refusal of SELECT in a cluster group.
const selectClusterText = "ERR SELECT is not allowed in cluster mode"

// isRedirect reports whether an error reply is one of Redis Cluster's
// redirects, which the proxy must follow itself.
func isRedirect(text string) bool {
	for _, p := range []string{"MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"} {
		if strings.HasPrefix(text, p) {
			return true
		}
	}
	return false
}

// clusterError checks an error reply outside a transaction against what a
// cluster group documents; done reports whether it decided.
func (c *roClient) clusterError(cmd *roCmd, v rval) (done bool, err error) {
	switch {
	case cmd.kind == kSelect && cmd.idx != 0 && v.str == selectClusterText:
		c.outcomes[notRun]++
		return true, nil
	case isRedirect(v.str):
		mm := c.mismatch(cmd, v, "a cluster redirect reached the client: the proxy follows every MOVED, ASK, TRYAGAIN and CLUSTERDOWN itself (README)").(*roMismatch)
		mm.invariant = "no client sees -MOVED, -ASK, -TRYAGAIN or -CLUSTERDOWN"
		return true, mm
	}
	return false, nil
}

// directCluster checks the reply of a command over two hash tags that ran.
// The proxy split it in two; its merged reply must read as Redis's would.
func (c *roClient) directCluster(cmd *roCmd, v rval) error {
	switch cmd.kind {
	case kMsetX:
		c.values[c.db][cmd.idx].ack(cmd.tok)
		c.xvalues[cmd.idx2].ack(cmd.tok2)
		if !v.is("OK") {
			return c.mismatch(cmd, v, "want +OK")
		}
		return nil
	case kMgetX:
		if !v.isArray() || len(v.elems) != 2 {
			return c.mismatch(cmd, v, "want an array of 2 values")
		}
		for i, st := range []*value{&c.xvalues[cmd.idx2], &c.values[c.db][cmd.idx]} {
			e := v.elems[i]
			if !e.null && !e.isBulk() {
				return c.mismatch(cmd, v, fmt.Sprintf("value %d: want a bulk string or nil", i))
			}
			if err := st.observe(e.str, e.null); err != nil {
				return c.mismatch(cmd, v, fmt.Sprintf("%s: %v", cmd.args[1+i], err))
			}
		}
		return nil
	case kMsetFresh:
		cmd.out = ran
		if !v.is("OK") {
			return c.mismatch(cmd, v, "want +OK")
		}
		return nil
	case kDelPair:
		n, ok := v.isInt()
		switch {
		case !ok:
			return c.mismatch(cmd, v, "want an integer")
		case cmd.push.out == ran && n != 2:
			return c.mismatch(cmd, v, "want 2: the MSET before it set both keys (the counts of the two slots summed)")
		case n < 0 || n > 2:
			return c.mismatch(cmd, v, "want 0..2")
		}
		return nil
	}
	return c.mismatch(cmd, v, "unexpected reply")
}
