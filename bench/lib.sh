# shellcheck shell=bash
# bench/lib.sh: helpers shared by bench/bench.sh and bench/failover.sh.
# Source it after setting BENCH_NAME (the log prefix), WORK (the work
# directory named in errors) and, for haproxy_cfg, MASTER and REPLICAS.

log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "$BENCH_NAME" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# need COMMAND PACKAGE: fail clearly when a tool is missing.
need() { command -v "$1" >/dev/null || die "$1 not found: run 'make deps' (Debian package $2)"; }

# stop_pid PID: SIGCONT (it may be stopped), SIGTERM, then SIGKILL after
# 10 s; reaps it.
stop_pid() {
	local pid=$1 i
	kill -CONT "$pid" 2>/dev/null || true
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# wait_for DESCRIPTION SECONDS PID COMMAND...: polls COMMAND every 0.1 s
# until it succeeds; fails if PID dies or time runs out.
wait_for() {
	local what=$1 secs=$2 pid=$3 i
	shift 3
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		kill -0 "$pid" 2>/dev/null || die "$what: process $pid exited (logs in $WORK)"
		sleep 0.1
	done
	die "$what: not ready after ${secs}s (logs in $WORK)"
}

pong() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# haproxy_cfg PORT MAXCONN: HAProxy in TCP mode with the usual role:master
# tcp-check over the master and its replicas.
haproxy_cfg() {
	cat <<CFG
global
    maxconn $2
defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    timeout check 2s
frontend redis
    bind 127.0.0.1:$1
    default_backend redis_master
backend redis_master
    option tcp-check
    tcp-check connect
    tcp-check send PING\r\n
    tcp-check expect string +PONG
    tcp-check send info\ replication\r\n
    tcp-check expect string role:master
    tcp-check send QUIT\r\n
    tcp-check expect string +OK
CFG
	local i=1 a
	for a in "$MASTER" $REPLICAS; do
		echo "    server redis-$i $a check inter 1s"
		i=$((i + 1))
	done
}

# only_master PORT: ten new connections in a row land on the master (HAProxy
# starts its servers UP until their first checks fail).
only_master() {
	local i
	for ((i = 0; i < 10; i++)); do
		redis-cli -h 127.0.0.1 -p "$1" info replication 2>/dev/null | grep -q '^role:master' || return 1
	done
}
