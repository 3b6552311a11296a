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
// exit when Run's context ends; Run then waits for them and closes every
// go-redis client it opened. ROLE checks run inline in the main loop on a
// short-lived client, bounded by DialTimeout+QueryTimeout.
//
// Master, Suspect and Status never block: Master and Status read a
// mutex-guarded published copy; a change closes the current change channel
// and replaces it under that mutex; Suspect records the address and does a
// non-blocking send on a one-slot channel.
//
// Sentinel's 0.0.0.0 placeholder. A node address reported as 0.0.0.0, ::
// or "" (by GET-MASTER-ADDR-BY-NAME, SENTINEL MASTER or an event) is the
// address the sentinel itself dials, i.e. its own host, so that sentinel's
// host is substituted. A peer sentinel listed by SENTINEL SENTINELS at
// 0.0.0.0 (an "announce-ip 0.0.0.0" misconfiguration) has no usable address
// and is not added.
package sentinel
