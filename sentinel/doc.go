// Package sentinel follows one Redis master name across every configured
// and discovered Sentinel and publishes the verified master for the proxy.
//
// It owns the sentinel side of failover: querying every sentinel
// (GET-MASTER-ADDR-BY-NAME for the address, SENTINEL MASTER for the config
// epoch and flags), choosing the highest config epoch, verifying ROLE=master
// on the target before publishing it, never going back to a lower epoch,
// holding (Master() == "") from the start of a failover of the current
// master until the promotion is verified or the abort is confirmed, and
// keeping the last verified master while no sentinel answers. Sentinel
// events are triggers to re-query, never the truth. It knows nothing of the
// proxy; the proxy consumes Watcher through its Master/Suspect methods.
//
// Goroutine model. Run is the main loop and the only owner of the decision
// state (loopState). Per known sentinel it starts two goroutines: a poller,
// which runs one query each time it is kicked (every PollInterval, and at
// once on any event, Suspect, (re)subscription or pending verification) and
// sends the answer to the main loop; and a subscriber, which keeps a
// PSUBSCRIBE * open with liveness PINGs and jittered reconnect backoff and
// forwards every message and every (re)subscription to the main loop. Both
// exit when Run's context ends. A sentinel that answers a query while its
// subscription is down is reachable again: the main loop wakes its
// subscriber, which retries at once with a reset backoff (unless the
// sentinel itself refused the last attempt), and until the subscription is
// back that sentinel is polled every 100ms instead of every PollInterval,
// since without its events only a query shows a failover starting. ROLE
// checks run in short-lived goroutines (at most one per address, each on
// its own short-lived client, bounded by DialTimeout+QueryTimeout) and
// report back to the main loop, so a frozen node never delays the reaction
// to a promotion. During a hold, at most one more goroutine polls the
// failover candidate's ROLE every 20ms on one client (see candidate.go); it
// ends when the candidate is dropped or published, or at the failover
// timeout. On cancel Run closes every go-redis client it opened, which
// unblocks queries in flight, and waits for all of its goroutines before
// returning.
//
// Master, Suspect and Status never block: Master and Status read a
// mutex-guarded published copy; a change closes the current change channel
// and replaces it under that mutex; Suspect records the address and does a
// non-blocking send on a one-slot channel.
//
// Choosing. Each sentinel's latest answer counts: the highest config epoch
// wins, ties go to the address most sentinels name. The address comes from
// GET-MASTER-ADDR-BY-NAME, never from SENTINEL MASTER's ip (on the failover
// leader it lags until its own +switch-master). ROLE must say master before
// an address is published; an address below the highest epoch ever seen is
// never published, so a returning old master that still claims master is
// ignored. (Only if every known sentinel reports the same lower epoch for
// ten poll intervals is that taken as a configuration reset.) When the
// freshest sentinels name another node, Master() is "" until that node
// passes ROLE. The first decision waits until every configured sentinel has
// answered or failed once, so a stale sentinel answering first is never
// routed to. The two reads are not atomic (no pipelining on SentinelClient):
// an answer whose address and SENTINEL MASTER disagree outside the leader's
// post-promotion window is read again.
//
// Failover hold. A start signal about the current master (+odown,
// +try-failover, +elected-leader, +failover-state-*, +selected-slave, or a
// poll showing o_down / a failover before its promotion) makes Master()
// return "" at once. The hold ends when the replica the leader chose
// answers ROLE master after SLAVEOF NO ONE was sent to it (the candidate,
// from +selected-slave / +failover-state-* or, events lost, from the
// leader's SENTINEL REPLICAS "promoted" flag; published at the failover
// epoch, ~0.8s before +promoted-slave: candidate.go says which epoch source
// is trusted and why), when a higher-epoch address the sentinels name
// passes ROLE (typically right after +promoted-slave, seconds before the
// leader's +switch-master), or, for an abort, when every sentinel that
// signalled has answered a later query without showing the failover and
// the old master passes ROLE again (after 10s the silence of a signalling
// sentinel that died is not waited for).
//
// Blind. When no known sentinel answers, Status().Blind is set and logged;
// Master() keeps the last verified master, or returns "" with
// StopWritesWhenBlind.
//
// Sentinel's 0.0.0.0 placeholder. A node address reported as 0.0.0.0, ::
// or "" (by GET-MASTER-ADDR-BY-NAME, SENTINEL MASTER or an event) is the
// address the sentinel itself dials, i.e. its own host, so that sentinel's
// host is substituted. A peer sentinel listed by SENTINEL SENTINELS at
// 0.0.0.0 (an "announce-ip 0.0.0.0" misconfiguration) has no usable address
// and is not added.
package sentinel
