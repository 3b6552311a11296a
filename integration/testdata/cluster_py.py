"""redis-py (plain redis.Redis, not RedisCluster) writing through
sentinel-proxy in front of a Redis Cluster, for cluster_clients_test.go.

Usage: /usr/bin/python3 cluster_py.py HOST PORT STOPFILE MAXOPS MAXSECONDS KEY[,KEY...]

INCRs the keys in turn, one connection, no retries, until STOPFILE exists,
MAXOPS commands were sent or MAXSECONDS have passed. Prints "ok" every 10
acknowledged INCRs, "ready" after the first 100, and one JSON line at the
end:
{"acked": {key: n}, "maybe": {key: n}, "errors": [...], "connects": n}
"""
import json
import os
import sys
import time

import redis

host, port, stopfile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
maxops, maxsecs, keys = int(sys.argv[4]), float(sys.argv[5]), sys.argv[6].split(",")
MAY_HAVE_RUN = "the command may have run (sentinel-proxy)"

connects = 0


class CountingConnection(redis.Connection):
    """Counts the connections redis-py opens: the proxy must never close one."""

    def on_connect(self):
        global connects
        connects += 1
        super().on_connect()


pool = redis.ConnectionPool(connection_class=CountingConnection, host=host, port=port,
                            socket_timeout=30, socket_connect_timeout=5)
r = redis.Redis(connection_pool=pool)
acked = {k: 0 for k in keys}
maybe = {k: 0 for k in keys}
errors = []
deadline = time.time() + maxsecs
total = 0
for i in range(maxops):
    if os.path.exists(stopfile) or time.time() > deadline:
        break
    k = keys[i % len(keys)]
    try:
        r.incr(k)
        acked[k] += 1
        total += 1
        if total % 10 == 0:
            print("ok", flush=True)  # progress, every 10 acknowledged
        if total == 100:
            print("ready", flush=True)
    except redis.RedisError as e:
        msg = "%s: %s" % (type(e).__name__, e)
        if MAY_HAVE_RUN in str(e):
            maybe[k] += 1
        else:
            errors.append(msg)
        if len(errors) > 50:
            break
print(json.dumps({"acked": acked, "maybe": maybe, "errors": errors, "connects": connects}), flush=True)
