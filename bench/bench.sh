#!/usr/bin/env bash
# bench/bench.sh (make bench): throughput and idle-client cost of
#   direct     redis-server, the master itself
#   proxy      bin/sentinel-proxy in front of the Sentinel topology
#   haproxy    HAProxy in TCP mode over master + replicas, role:master tcp-check
#   twemproxy  nutcracker (redis: true) with the master as its only server
# all on one throwaway loopback topology (1 master, 2 replicas, 3 sentinels,
# started by bench/topo), and, on a throwaway 3-master Redis Cluster (no
# replicas) started here with redis-server --cluster-enabled yes and
# redis-cli --cluster create,
#   cluster-direct  the one cluster node that serves redis-benchmark's key
#                   (key:__rand_int__ without -r, one slot): no MOVED
#   cluster-proxy   bin/sentinel-proxy --cluster-nodes in front of the 3 shards,
#                   same key, so every command routes to that one shard
#   cluster-spread  the same proxy with redis-benchmark -r 100000: keys in
#                   every slot, routed to all 3 shards
# (3 shards on this project's 2 cores, shared with everything else, cannot
# add throughput: the cluster columns are read for CPU, not req/s).
# redis-benchmark (SET and GET: 50 clients at -P 1 and -P 16, 1,000 clients
# at -P 1) runs against every target in every round, interleaved, and the
# table shows each target's median over the rounds, its ratio to direct
# (cluster-* to cluster-direct), the median of its ratios to direct's run of
# the same round, and its p99 latency. Each round runs one configuration
# against every target before the next configuration. A second table gives
# each target's own CPU time and syscalls (read and write family, from
# /proc/PID/stat and /proc/PID/io) per request over the same runs, beside
# the Redis process's and redis-benchmark's own CPU per request and the share
# of the machine's CPU time nobody used (idle), and a third the cluster
# proxy's CPU per request against the Sentinel group proxy's (the cost of
# slot routing). Before that, 5,000 idle clients (one
# PING each) are opened against each proxy to measure its resident memory
# per idle client and the backend connections they cost.
#
# A benchmark, not a test: it prints figures and fails only when something
# could not be run. The load generator shares the machine's cores with the
# targets, so compare ratios within one run, not absolute figures across
# machines.
#
# Environment (defaults in brackets):
#   BENCH_TARGETS       targets to run ["direct proxy proxy-noshare haproxy twemproxy
#                       cluster-direct cluster-proxy cluster-spread"]
#                       (proxy-noshare: sentinel-proxy with --shared-connections 0)
#   BENCH_ROUNDS        rounds [5]
#   BENCH_CLIENTS       redis-benchmark -c of the -P 1 and -P 16 runs [50]
#   BENCH_MANY          redis-benchmark -c of the many-clients -P 1 run, 0 = skip [1000]
#   BENCH_N_P1          requests per test at -P 1 [auto: ~2.5 s against direct]
#   BENCH_N_P16         requests per test at -P 16 [auto: ~2.5 s against direct]
#   BENCH_IDLE_CLIENTS  idle connections per proxy, 0 = skip [5000]
#   BENCH_PROXY_BIN     proxy binary [bin/sentinel-proxy, built first]
#   BENCH_PROXY_ARGS    extra proxy flags [""]
#   BENCH_KEEP          1 = keep the work directory (logs, configs) [0]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TARGETS=${BENCH_TARGETS:-direct proxy proxy-noshare haproxy twemproxy cluster-direct cluster-proxy cluster-spread}
ROUNDS=${BENCH_ROUNDS:-5}
CLIENTS=${BENCH_CLIENTS:-50}
MANY=${BENCH_MANY:-1000}
N_P1=${BENCH_N_P1:-auto}
N_P16=${BENCH_N_P16:-auto}
IDLE=${BENCH_IDLE_CLIENTS:-5000}
PROXY_BIN=${BENCH_PROXY_BIN:-bin/sentinel-proxy}
PROXY_ARGS=${BENCH_PROXY_ARGS:-}
KEEP=${BENCH_KEEP:-0}

BENCH_NAME=bench
WORK=
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
has() { [[ " $TARGETS " == *" $1 "* ]]; }
has_cluster() { [[ " $TARGETS " == *" cluster-"* ]]; }

for t in $TARGETS; do
	case $t in
	direct | proxy | proxy-noshare | haproxy | twemproxy | cluster-direct | cluster-proxy | cluster-spread) ;;
	*) die "unknown target '$t' in BENCH_TARGETS" ;;
	esac
done

# sbin is not on a normal user's PATH, and haproxy / nutcracker live there.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
need go "golang, or Go from its upstream tarball"
need redis-benchmark redis-tools
need redis-cli redis-tools
has_cluster && need redis-server redis-server
has haproxy && need haproxy haproxy
has twemproxy && need nutcracker nutcracker

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sentinel-proxy-bench.XXXXXX")
PIDS=() # every process started here, stopped by PID at exit

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	exec 3>&- 4>&- || true
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[i]}"
	done
	if [[ $rc != 0 || $KEEP == 1 ]]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Enough descriptors for 5,000 idle clients (HAProxy needs two per client,
# Redis one per backend connection); raised before anything starts so every
# child inherits it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
HAPROXY_MAXCONN=$((IDLE + 1000))
if (($(ulimit -n) < 2 * HAPROXY_MAXCONN + 1000)); then
	IDLE=$((($(ulimit -n) - 1000) / 2 - 1000))
	((IDLE < 0)) && IDLE=0
	HAPROXY_MAXCONN=$((IDLE + 1000))
	log "ulimit -n is only $(ulimit -n): idle clients lowered to $IDLE"
fi

# --- build -----------------------------------------------------------------
log "building helpers (bench/topo, bench/idle)"
go build -o "$WORK/topo" ./bench/topo || die "cannot build bench/topo"
go build -o "$WORK/idle" ./bench/idle || die "cannot build bench/idle"
if has proxy || has proxy-noshare || has cluster-proxy || has cluster-spread; then
	if [[ $PROXY_BIN == bin/sentinel-proxy ]]; then
		log "building bin/sentinel-proxy"
		go build -o bin/sentinel-proxy ./cmd/sentinel-proxy ||
			die "cannot build bin/sentinel-proxy from ./cmd/sentinel-proxy (see above); BENCH_TARGETS=\"direct haproxy twemproxy\" bench/bench.sh runs the others"
	fi
	[[ -x $PROXY_BIN ]] || die "proxy binary $PROXY_BIN not found or not executable"
fi

# --- topology --------------------------------------------------------------
log "starting topology (1 master, 2 replicas, 3 sentinels)"
mkfifo "$WORK/topo.in"
exec 3<>"$WORK/topo.in" # the helper stops the topology when this closes
"$WORK/topo" -free-ports 12 <"$WORK/topo.in" >"$WORK/topo.env" 2>"$WORK/topo.log" 3>&- &
TOPO_PID=$!
PIDS+=("$TOPO_PID")
wait_for "topology" 90 "$TOPO_PID" grep -q '^READY=1' "$WORK/topo.env"
# shellcheck source=/dev/null
. "$WORK/topo.env"
read -r PORT_PROXY PORT_HAPROXY PORT_TWEM PORT_TWEM_STATS PORT_NOSHARE PORT_CPROXY \
	CPORT1 CPORT2 CPORT3 CBUS1 CBUS2 CBUS3 <<<"$FREE_PORTS"
log "master $MASTER, replicas $REPLICAS, sentinels $SENTINELS"

declare -A PORT PID ARGS # ARGS: extra redis-benchmark flags of a target
PORT[direct]=$MASTER_PORT
PID[direct]=$MASTER_PID

if has proxy; then
	# shellcheck disable=SC2086 # PROXY_ARGS is split on purpose
	"$PROXY_BIN" --listen "127.0.0.1:$PORT_PROXY" --master-name "$MASTER_NAME" --sentinels "$SENTINELS" \
		$PROXY_ARGS >"$WORK/proxy.log" 2>&1 3>&- </dev/null &
	PID[proxy]=$!
	PIDS+=("${PID[proxy]}")
	PORT[proxy]=$PORT_PROXY
	wait_for "sentinel-proxy" 30 "${PID[proxy]}" pong "$PORT_PROXY"
	log "sentinel-proxy on 127.0.0.1:$PORT_PROXY (pid ${PID[proxy]})"
fi
if has proxy-noshare; then
	# The same binary without shared backend connections (the flag comes
	# last: it wins over one in PROXY_ARGS).
	# shellcheck disable=SC2086 # PROXY_ARGS is split on purpose
	"$PROXY_BIN" --listen "127.0.0.1:$PORT_NOSHARE" --master-name "$MASTER_NAME" --sentinels "$SENTINELS" \
		$PROXY_ARGS --shared-connections 0 >"$WORK/proxy-noshare.log" 2>&1 3>&- </dev/null &
	PID[proxy-noshare]=$!
	PIDS+=("${PID[proxy-noshare]}")
	PORT[proxy-noshare]=$PORT_NOSHARE
	wait_for "sentinel-proxy without sharing" 30 "${PID[proxy-noshare]}" pong "$PORT_NOSHARE"
	log "sentinel-proxy --shared-connections 0 on 127.0.0.1:$PORT_NOSHARE (pid ${PID[proxy-noshare]})"
fi

if has haproxy; then
	haproxy_cfg "$PORT_HAPROXY" "$HAPROXY_MAXCONN" >"$WORK/haproxy.cfg"
	haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejects $WORK/haproxy.cfg"
	haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 3>&- </dev/null &
	PID[haproxy]=$!
	PIDS+=("${PID[haproxy]}")
	PORT[haproxy]=$PORT_HAPROXY
	wait_for "haproxy role:master check" 30 "${PID[haproxy]}" only_master "$PORT_HAPROXY"
	log "haproxy on 127.0.0.1:$PORT_HAPROXY (pid ${PID[haproxy]})"
fi

if has twemproxy; then
	cat >"$WORK/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$PORT_TWEM
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
   - $MASTER:1
EOF
	nutcracker -t -c "$WORK/nutcracker.yml" >/dev/null 2>&1 || die "nutcracker rejects $WORK/nutcracker.yml"
	nutcracker -c "$WORK/nutcracker.yml" -s "$PORT_TWEM_STATS" -a 127.0.0.1 -p "$WORK/nutcracker.pid" \
		-o "$WORK/nutcracker.log" 3>&- </dev/null &
	PID[twemproxy]=$!
	PIDS+=("${PID[twemproxy]}")
	PORT[twemproxy]=$PORT_TWEM
	wait_for "twemproxy" 30 "${PID[twemproxy]}" pong "$PORT_TWEM"
	log "twemproxy on 127.0.0.1:$PORT_TWEM (pid ${PID[twemproxy]})"
fi

# --- cluster -----------------------------------------------------------------
# cluster_ok PORT...: every node says cluster_state:ok (all slots served, as
# each of them sees it).
cluster_ok() {
	local p
	for p in "$@"; do
		redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | tr -d '\r' | grep -q '^cluster_state:ok$' || return 1
	done
}
# slot_owner PORT SLOT: host:port of the master serving SLOT, as node PORT
# sees it (CLUSTER NODES: field 2 is ip:port@bus, fields 9… the slot ranges;
# "[slot->-id]" entries are migrations, skipped).
slot_owner() {
	redis-cli -h 127.0.0.1 -p "$1" cluster nodes | tr -d '\r' | awk -v s="$2" '
		$3 ~ /master/ {
			for (i = 9; i <= NF; i++) {
				if ($i ~ /^\[/) continue
				n = split($i, r, "-")
				if (n == 1) r[2] = r[1]
				if (s + 0 >= r[1] + 0 && s + 0 <= r[2] + 0) {sub(/@.*/, "", $2); print $2; exit}
			}
		}'
}
# serves PORT PID: the Redis on PORT is process PID, not a stranger that
# took the port between bench/topo's pick and our start (the pick is only
# free "a moment ago").
serves() { [[ $(info_field "$1" process_id) == "$2" ]]; }
# info_field PORT FIELD: one INFO field of the node on PORT.
info_field() {
	redis-cli -h 127.0.0.1 -p "$1" info all | tr -d '\r' | awk -F: -v f="$2" '$1 == f {print $2}'
}

# redis-benchmark without -r sends the literal key key:__rand_int__, so
# every SET and GET lands in one slot; cluster-direct is the node serving
# it, and cluster-proxy routes every command to that same shard.
BENCH_KEY='key:__rand_int__'
if has_cluster; then
	CPORTS=("$CPORT1" "$CPORT2" "$CPORT3")
	CBUSES=("$CBUS1" "$CBUS2" "$CBUS3")
	CNODES=$(
		IFS=,
		echo "${CPORTS[*]/#/127.0.0.1:}"
	)
	CPIDS=()
	log "starting Redis Cluster (3 masters, no replicas)"
	for i in 0 1 2; do
		d=$WORK/cluster-$((i + 1))
		mkdir "$d"
		# The bus port is a free port too: port + 10000 may be taken.
		cat >"$d/redis.conf" <<EOC
port ${CPORTS[i]}
bind 127.0.0.1
daemonize no
logfile ""
dir $d
save ""
appendonly no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-port ${CBUSES[i]}
EOC
		redis-server "$d/redis.conf" >"$d.log" 2>&1 3>&- </dev/null &
		CPIDS+=("$!")
		PIDS+=("$!")
	done
	for i in 0 1 2; do
		wait_for "cluster node ${CPORTS[i]} (its port or bus port ${CBUSES[i]} may have been taken)" 30 \
			"${CPIDS[i]}" serves "${CPORTS[i]}" "${CPIDS[i]}"
	done
	timeout 60 redis-cli --cluster create "${CPORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes \
		>"$WORK/cluster-create.log" 2>&1 </dev/null ||
		die "redis-cli --cluster create failed: $(tail -n 3 "$WORK/cluster-create.log" | tr '\n' ' ')"
	wait_for "cluster_state:ok on all 3 nodes" 30 "${CPIDS[0]}" cluster_ok "${CPORTS[@]}"

	SLOT=$(redis-cli -h 127.0.0.1 -p "$CPORT1" cluster keyslot "$BENCH_KEY" | tr -d '\r')
	owner=$(slot_owner "$CPORT1" "$SLOT")
	[[ -n $owner ]] || die "no master serves slot $SLOT of $BENCH_KEY"
	PORT[cluster-direct]=${owner##*:}
	for i in 0 1 2; do
		[[ ${CPORTS[i]} == "${PORT[cluster-direct]}" ]] && PID[cluster-direct]=${CPIDS[i]}
	done
	[[ -n ${PID[cluster-direct]:-} ]] || die "slot $SLOT is served by $owner, not a node started here"
	# A wrong pick would be answered MOVED, and redis-benchmark stops at
	# the first error reply; catch it here, with a clear message.
	reply=$(redis-cli -h 127.0.0.1 -p "${PORT[cluster-direct]}" set "$BENCH_KEY" x 2>&1 | tr -d '\r')
	[[ $reply == OK ]] || die "SET $BENCH_KEY on $owner answered '$reply', not OK"
	log "cluster nodes $CNODES (pids ${CPIDS[*]}); $BENCH_KEY is in slot $SLOT, served by $owner"

	if has cluster-proxy || has cluster-spread; then
		# shellcheck disable=SC2086 # PROXY_ARGS is split on purpose
		"$PROXY_BIN" --listen "127.0.0.1:$PORT_CPROXY" --cluster-nodes "$CNODES" $PROXY_ARGS >"$WORK/cluster-proxy.log" 2>&1 3>&- </dev/null &
		CPROXY_PID=$!
		PIDS+=("$CPROXY_PID")
		wait_for "sentinel-proxy --cluster-nodes" 30 "$CPROXY_PID" pong "$PORT_CPROXY"
		kill -0 "$CPROXY_PID" 2>/dev/null || die "sentinel-proxy --cluster-nodes exited (port $PORT_CPROXY taken?), see $WORK/cluster-proxy.log"
		reply=$(redis-cli -h 127.0.0.1 -p "$PORT_CPROXY" set "$BENCH_KEY" x 2>&1 | tr -d '\r')
		[[ $reply == OK ]] || die "SET $BENCH_KEY through the cluster proxy answered '$reply', not OK"
		# cluster-spread is the same process, measured on its own runs.
		PORT[cluster-proxy]=$PORT_CPROXY PID[cluster-proxy]=$CPROXY_PID
		PORT[cluster-spread]=$PORT_CPROXY PID[cluster-spread]=$CPROXY_PID
		ARGS[cluster-spread]="-r 100000"
		log "sentinel-proxy --cluster-nodes on 127.0.0.1:$PORT_CPROXY (pid $CPROXY_PID)"
	fi
fi

# --- idle clients ------------------------------------------------------------
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
master_clients() {
	redis-cli -h 127.0.0.1 -p "$MASTER_PORT" info clients | tr -d '\r' | awk -F: '/^connected_clients:/ {print $2}'
}
# backend_conns PID: established TCP connections from PID to the master.
backend_conns() {
	if command -v ss >/dev/null; then
		ss -Htnp state established "( dport = :$MASTER_PORT )" 2>/dev/null | grep -c "pid=$1," || true
	else
		echo "n/a"
	fi
}

IDLE_ROWS=()
IDLE_FMT='%-10s %-24s %11s %10s %10s %20s %16s'
idle_test() {
	local t=$1 pid=${PID[$1]} port=${PORT[$1]} rss0 rss1 be0 be1 mc0 mc1 ipid ready
	rss0=$(rss_kib "$pid")
	be0=$(backend_conns "$pid")
	mc0=$(master_clients)
	mkfifo "$WORK/idle-$t.in"
	exec 4<>"$WORK/idle-$t.in"
	"$WORK/idle" -addr "127.0.0.1:$port" -n "$IDLE" <"$WORK/idle-$t.in" >"$WORK/idle-$t.out" 2>&1 3>&- 4>&- &
	ipid=$!
	PIDS+=("$ipid")
	wait_for "$IDLE idle clients to $t" 120 "$ipid" grep -q '^READY' "$WORK/idle-$t.out"
	# A measurement, not synchronisation: give pools time to release.
	sleep 2
	rss1=$(rss_kib "$pid")
	be1=$(backend_conns "$pid")
	mc1=$(master_clients)
	ready=$(grep '^READY' "$WORK/idle-$t.out")
	exec 4>&- # EOF: the idle helper closes its connections and exits
	stop_pid "$ipid"
	# shellcheck disable=SC2059 # the format is ours
	IDLE_ROWS+=("$(printf "$IDLE_FMT" "$t" "${ready#READY }" "$rss0" "$rss1" \
		"$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE" 'BEGIN {printf "%.2f", (b - a) / n}')" \
		"$be0 -> $be1" "$mc0 -> $mc1")")
}
if ((IDLE > 0)); then
	for t in proxy haproxy twemproxy; do
		if has "$t"; then
			log "idle clients: $IDLE to $t"
			idle_test "$t"
		fi
	done
fi

# --- throughput --------------------------------------------------------------
# rps PORT N P: SET requests/s of one short redis-benchmark run.
rps() {
	redis-benchmark -h 127.0.0.1 -p "$1" -c "$CLIENTS" -n "$2" -P "$3" -t set --csv 2>/dev/null |
		tr -d '"' | awk -F, '$1 == "SET" {printf "%.0f", $2}'
}
# Size -n so a test takes about 2.5 s against direct Redis on this machine
# now: the rounds then last about as long on a fast idle machine as on a
# loaded one (the other targets take longer in proportion to their ratio).
calibrate() {
	local r
	r=$(rps "$MASTER_PORT" "$2" "$1")
	[[ -n $r ]] || die "calibration run against the master failed"
	awk -v r="$r" -v lo="$3" -v hi="$4" 'BEGIN {n = int(r * 2.5 / 1000) * 1000; if (n < lo) n = lo; if (n > hi) n = hi; print n}'
}
if [[ $N_P1 == auto ]]; then N_P1=$(calibrate 1 30000 20000 1000000); fi
if [[ $N_P16 == auto ]]; then N_P16=$(calibrate 16 200000 100000 10000000); fi
log "requests per test: $N_P1 at -P 1, $N_P16 at -P 16"

# cpu_ticks PID: user + system CPU time of PID, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# redis_ticks PID...: CPU time of the Redis processes behind a target.
redis_ticks() {
	local p n=0
	for p; do n=$((n + $(cpu_ticks "$p"))); done
	echo "$n"
}
# syscalls PID: read and write syscalls of PID so far (/proc/PID/io).
syscalls() { awk '/^sysc[rw]:/ {n += $2} END {print n + 0}' "/proc/$1/io" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)
# idle_ticks: ticks all CPUs spent idle (idle + iowait) so far, and all ticks.
idle_ticks() { awk '$1 == "cpu" {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# The runs, as clients:pipeline; each config is a column group of the table.
CONFIGS="$CLIENTS:1 $CLIENTS:16"
((MANY > 0)) && CONFIGS="$CONFIGS $MANY:1"
RESULTS=$WORK/results.tsv
COSTS=$WORK/costs.tsv
: >"$RESULTS"
: >"$COSTS"
read -r -a ORDER <<<"$TARGETS"
# From here on a cluster node's error replies can only come from the runs
# (a MOVED would be one of them).
if has_cluster; then
	for p in "${CPORTS[@]}"; do redis-cli -h 127.0.0.1 -p "$p" config resetstat >/dev/null; done
fi
for ((r = 1; r <= ROUNDS; r++)); do
	# Each run (clients:pipeline) against every target back to back, so
	# that the runs compared with each other are minutes closer in time
	# than a target's whole round would put them; the order of the
	# targets rotates each round so no target always runs first.
	for cfg in $CONFIGS; do
		c=${cfg%:*} p=${cfg#*:}
		for ((k = 0; k < ${#ORDER[@]}; k++)); do
			t=${ORDER[(k + r - 1) % ${#ORDER[@]}]}
			pid=${PID[$t]}
			n=$N_P1
			((p == 16)) && n=$N_P16
			log "round $r/$ROUNDS: $t -c $c -P $p -n $n"
			out=$WORK/rb-$t-c$c-P$p-r$r.csv
			# The Redis process(es) behind t: what a proxy saves or costs Redis.
			if [[ $t == cluster-* ]]; then rpids=("${CPIDS[@]}"); else rpids=("$MASTER_PID"); fi
			t0=$(cpu_ticks "$pid") s0=$(syscalls "$pid") r0=$(redis_ticks "${rpids[@]}")
			read -r i0 a0 < <(idle_ticks)
			# The subshell's children's CPU once redis-benchmark is reaped:
			# the load generator's own cost.
			# shellcheck disable=SC2086 # ARGS are split on purpose
			b=$(
				timeout 300 redis-benchmark -h 127.0.0.1 -p "${PORT[$t]}" -c "$c" -n "$n" -P "$p" \
					-t set,get ${ARGS[$t]:-} --csv >"$out" 2>"$out.err" || echo "failed " >&2
				awk '{print $16 + $17}' "/proc/$BASHPID/stat"
			) 2>"$out.status"
			if [[ -s $out.status ]]; then
				log "redis-benchmark against $t failed: $(tail -n 3 "$out.err" | tr '\n' ' ')"
			fi
			t1=$(cpu_ticks "$pid") s1=$(syscalls "$pid") r1=$(redis_ticks "${rpids[@]}")
			read -r i1 a1 < <(idle_ticks)
			# SET and GET: 2n requests.
			awk -v t="$t" -v c="$c" -v p="$p" -v r="$r" -v n="$n" -v hz="$HZ" -v dt=$((t1 - t0)) -v ds=$((s1 - s0)) -v dr=$((r1 - r0)) \
				-v db="${b:-0}" -v di=$((i1 - i0)) -v da=$((a1 - a0)) \
				'BEGIN {printf "%s\t%s\t%s\t%s\t%.1f\t%.2f\t%.1f\t%.1f\t%.0f\n", t, c, p, r, dt / hz * 1e6 / (2 * n), ds / (2 * n), dr / hz * 1e6 / (2 * n),
					db / hz * 1e6 / (2 * n), da ? 100 * di / da : 0}' >>"$COSTS"
			tr -d '"' <"$out" | awk -F, -v t="$t" -v c="$c" -v p="$p" -v r="$r" \
				'$1 == "SET" || $1 == "GET" {print t "\t" $1 "\t" c ":" p "\t" r "\t" $2 "\t" $7}' >>"$RESULTS"
		done
	done
done

# What the cluster nodes saw over the runs: error replies (MOVED, ASK or any
# other) and keys held, per node.
CLUSTER_SEEN=
if has_cluster; then
	for p in "${CPORTS[@]}"; do
		keys=$(info_field "$p" db0 | sed 's/^keys=\([0-9]*\).*/\1/')
		CLUSTER_SEEN+=" 127.0.0.1:$p $(info_field "$p" total_error_replies) errors, ${keys:-0} keys;"
	done
fi

# --- report ------------------------------------------------------------------
echo
echo "sentinel-proxy benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load generator on the same cores"
echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"
echo "$(redis-server --version | awk '{print $1, $2, $3}'); redis-benchmark -n $N_P1 (-P 1) / $N_P16 (-P 16), runs (clients:pipeline) $CONFIGS; $ROUNDS rounds, interleaved"
has haproxy && echo "$(haproxy -v | head -n 1 | awk '{print $1, $2, $3}'); tcp mode, role:master tcp-check over master + 2 replicas"
has twemproxy && echo "$(nutcracker --version 2>&1 | head -n 1); redis: true, master only"
if has_cluster; then
	echo "Redis Cluster: 3 masters, no replicas; $BENCH_KEY is in slot $SLOT, cluster-direct is its node 127.0.0.1:${PORT[cluster-direct]};"
	has cluster-spread && echo "  cluster-spread: redis-benchmark -r 100000 through the cluster proxy, keys on all 3 shards."
	echo "  On $(nproc) cores shared with the load generator and the other targets, 3 shards cannot add throughput: compare CPU, not req/s."
	echo "  error replies (a MOVED counts; 0 expected) and keys per node over the runs:${CLUSTER_SEEN%;}"
fi
echo
echo "/direct: ratio to direct; for cluster-* targets, to cluster-direct"
echo "/direct per round: the median of the ratios to direct's run of the same round, minutes apart at most"
printf '%-14s %-4s %9s %14s %8s %9s %9s   %s\n' target test "clients:P" "median req/s" "/direct" "per round" "p99 ms" "req/s per round"
for test in SET GET; do
	for cfg in $CONFIGS; do
		for t in $TARGETS; do
			awk -F'\t' -v t="$t" -v test="$test" -v cfg="$cfg" '
				$1 == t && $2 == test && $3 == cfg {v[n + 0] = $5; l[n++] = $6; rounds = rounds " " sprintf("%.0f", $5); tr[$4] = $5}
				$1 == (t ~ /^cluster-/ ? "cluster-direct" : "direct") && $2 == test && $3 == cfg {d[m++] = $5; dr[$4] = $5}
				function median(a, k,   i, j, x) {
					for (i = 1; i < k; i++) for (j = i; j > 0 && a[j-1] > a[j]; j--) {x = a[j]; a[j] = a[j-1]; a[j-1] = x}
					return k % 2 ? a[(k-1)/2] : (a[k/2-1] + a[k/2]) / 2
				}
				END {
					if (n == 0) {printf "%-14s %-4s %9s %14s %8s\n", t, test, cfg, "FAILED", "-"; exit}
					med = median(v, n)
					ratio = m ? sprintf("%.2f", med / median(d, m)) : "-"
					for (r in tr) if (dr[r] > 0) q[nq++] = tr[r] / dr[r]
					rr = nq ? sprintf("%.2f", median(q, nq)) : "-"
					printf "%-14s %-4s %9s %14.0f %8s %9s %9.3f  %s\n", t, test, cfg, med, ratio, rr, median(l, n), rounds
				}' "$RESULTS"
		done
	done
done

echo
echo "Cost per request of each target's own process (SET and GET runs together; medians over the rounds):"
echo "CPU from /proc/PID/stat (user + system), syscalls = read and write family from /proc/PID/io;"
echo "Redis CPU: the Redis process behind the target over the same runs (for cluster-*, all 3 nodes);"
echo "bench CPU: redis-benchmark's own; idle: share of all CPUs idle during the runs (what nobody used)"
printf '%-14s %9s %16s %18s %16s %10s %6s\n' target "clients:P" "CPU us/request" "syscalls/request" "Redis CPU us/req" "bench us" "idle"
for cfg in $CONFIGS; do
	for t in $TARGETS; do
		awk -F'\t' -v t="$t" -v cfg="$cfg" '
			$1 == t && $2 ":" $3 == cfg {n += 0; u[n] = $5; s[n] = $6; rc[n] = $7; bc[n] = $8; id[n++] = $9}
			function median(a, k,   i, j, x) {
				for (i = 1; i < k; i++) for (j = i; j > 0 && a[j-1] > a[j]; j--) {x = a[j]; a[j] = a[j-1]; a[j-1] = x}
				return k % 2 ? a[(k-1)/2] : (a[k/2-1] + a[k/2]) / 2
			}
			END {
				if (!n) exit
				# HAProxy receives and sends with recv/send, which /proc/PID/io does not count.
				ms = median(s, n)
				sc = ms > 0 ? sprintf("%.2f", ms) : "-"
				printf "%-14s %9s %16.1f %18s %16.1f %10.1f %5.0f%%\n", t, cfg, median(u, n), sc, median(rc, n), median(bc, n), median(id, n)
			}' "$COSTS"
	done
done

if has proxy && { has cluster-proxy || has cluster-spread; }; then
	echo
	echo "Cost of slot routing: the cluster proxy's CPU per request against the Sentinel group proxy's, same runs"
	echo "(medians over the rounds; target: at most 1.10)"
	printf '%-9s %10s %14s %9s %15s %9s\n' "clients:P" "proxy us" "cluster-proxy" "/proxy" "cluster-spread" "/proxy"
	for cfg in $CONFIGS; do
		awk -F'\t' -v cfg="$cfg" '
			$2 ":" $3 == cfg {u[$1, k[$1]++] = $5}
			function median(t,   a, n, i, j, x) {
				n = k[t]
				for (i = 0; i < n; i++) a[i] = u[t, i]
				for (i = 1; i < n; i++) for (j = i; j > 0 && a[j-1] > a[j]; j--) {x = a[j]; a[j] = a[j-1]; a[j-1] = x}
				return n % 2 ? a[(n-1)/2] : (a[n/2-1] + a[n/2]) / 2
			}
			function col(t) {return k[t] ? sprintf("%.1f", median(t)) : "-"}
			function ratio(t) {return k[t] && k["proxy"] && median("proxy") > 0 ? sprintf("%.2f", median(t) / median("proxy")) : "-"}
			END {printf "%-9s %10s %14s %9s %15s %9s\n", cfg, col("proxy"), col("cluster-proxy"), ratio("cluster-proxy"), col("cluster-spread"), ratio("cluster-spread")}' "$COSTS"
	done
fi

if ((${#IDLE_ROWS[@]} > 0)); then
	echo
	echo "Idle clients: $IDLE connections, one PING each, then idle (RSS in KiB from /proc/PID/status)"
	# shellcheck disable=SC2059 # the format is ours
	printf "$IDLE_FMT\n" target clients "RSS before" "RSS after" "KiB/client" "its conns to master" "master clients"
	printf '%s\n' "${IDLE_ROWS[@]}"
fi
