package sentinel

import "time"

// Master is a master the watcher verified: named by the sentinels with the
// highest config epoch and answering ROLE with "master".
type Master struct {
	// Addr is host:port in net.JoinHostPort form.
	Addr string
	// Epoch is the sentinels' config epoch for Addr.
	Epoch int64
	// VerifiedAt is when ROLE last said master.
	VerifiedAt time.Time
}

// Status is a snapshot for /status and /readyz. It is a copy: holding it
// does not block the watcher.
type Status struct {
	MasterName string
	// Master is what Master() returns now ("" while holding).
	Master string
	// LastVerified is the last master the watcher verified; it is kept while
	// the sentinels are unreachable (Blind) and during a failover.
	LastVerified Master
	// Verified is true while LastVerified is still what the freshest
	// sentinels name and its ROLE check passed.
	Verified bool
	// HighestEpoch is the highest config epoch any sentinel reported; the
	// watcher never routes to an address of a lower epoch.
	HighestEpoch int64
	// FailoverInProgress is true from a failover start signal for the current
	// master until the promotion is verified or the failover is aborted and
	// the old master re-verified.
	FailoverInProgress bool
	FailoverSince      time.Time
	FailoverReason     string
	// Candidate is the replica the failover leader chose, which the watcher
	// polls with ROLE to publish it as soon as it is master ("" when none).
	Candidate string
	// Blind is true while no known sentinel answers.
	Blind      bool
	BlindSince time.Time
	// Error says why there is no verified master, if there is none ("" when
	// there is one).
	Error string
	// Sentinels lists every known sentinel, configured first.
	Sentinels []SentinelStatus
	// LastEvent is the last sentinel event about this master.
	LastEvent Event
	// EventCounts counts the events about this master by channel
	// ("+switch-master", "+odown", …) since the watcher started.
	EventCounts map[string]uint64
	// LastChange is when Master() last changed.
	LastChange time.Time
}

// Ready reports whether the proxy can route writes now.
func (s Status) Ready() bool { return s.Master != "" }

// SentinelStatus is one sentinel's last answer.
type SentinelStatus struct {
	Addr string
	// Discovered is true for sentinels learned from SENTINEL SENTINELS.
	Discovered bool
	// RunID is the sentinel's id, when known (SENTINEL MYID).
	RunID string
	// Subscribed is true while the event subscription is up.
	Subscribed bool
	// LastAnswerAt, MasterAddr, Epoch, Flags and FailoverState describe the
	// last successful query; LastErr and LastErrAt the last failed one.
	LastAnswerAt  time.Time
	MasterAddr    string
	Epoch         int64
	Flags         string
	FailoverState string
	UnknownMaster bool
	LastErr       string
	LastErrAt     time.Time
	// OK is true when the most recent query succeeded.
	OK bool
}

// Event is a sentinel Pub/Sub event about the watched master.
type Event struct {
	Sentinel string
	Channel  string
	Payload  string
	At       time.Time
}
