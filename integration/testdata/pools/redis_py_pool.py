"""A Tomcat-style redis-py (4.3.4) client through sentinel-proxy.

Usage: /usr/bin/python3 redis_py_pool.py HOST PORT PASSWORD DB PREFIX CHANNEL SIZE

What Jedis' pool (tomcat-redis-session-manager) and Redisson do, with
redis-py: a BlockingConnectionPool of SIZE long-lived connections that AUTH
and SELECT DB once, when they are opened; PING on every borrow (Jedis'
testOnBorrow); and a long-lived pub/sub connection of its own (Redisson's
topic listener), read by a listener thread. No retries anywhere: redis-py's
default Retry(NoBackoff(), 0), retry_on_timeout off, and the listener
records every error instead of hiding it.

Driven by pools_test.go over stdin/stdout, one line each:
  out "ready {json}"     the pool is warm (every connection borrowed at once,
                         PING, SET PREFIX+"before:I" = "bI") and the listener
                         subscribed to CHANNEL
  out "msg PAYLOAD"      the listener received PAYLOAD on CHANNEL
  in  "check"            borrow every connection at once: PING, GET
                         before:I, SET PREFIX+"after:I" = "aI"
  out "checked {json}"   {"borrowed": n, "failures": [...]}
  in  "quit"             stop the listener, close everything
  out "summary {json}"   {"setup", "opened", "listener_errors", "other", "note"}
"""
import json
import sys
import threading

import redis

host, port, password = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None
db, prefix, channel, size = int(sys.argv[4]), sys.argv[5], sys.argv[6], int(sys.argv[7])

out_lock = threading.Lock()


def emit(tag, payload):
    with out_lock:
        sys.stdout.write(tag + " " + payload + "\n")
        sys.stdout.flush()


class PoolConnection(redis.Connection):
    """Counts on_connect: every (re)opened socket, which AUTHs and SELECTs."""

    opened = 0

    def on_connect(self):
        super().on_connect()
        type(self).opened += 1


class SubConnection(PoolConnection):
    opened = 0


def new_pool(cls, n):
    return redis.BlockingConnectionPool(
        connection_class=cls, host=host, port=port, password=password, db=db,
        max_connections=n, timeout=5, socket_timeout=20, socket_connect_timeout=5,
        retry_on_timeout=False)


def do(conn, *args):
    conn.send_command(*args)
    return conn.read_response()


def borrow_all(pool, step):
    """Borrows every connection at once (each is a different socket), runs
    step(i, conn) on each after a PING, and returns the failures."""
    failures, conns = [], []
    try:
        for _ in range(size):
            conns.append(pool.get_connection("PING"))
        for i, conn in enumerate(conns):
            try:
                pong = do(conn, "PING")
                if pong not in (b"PONG", "PONG"):
                    failures.append("conn %d: PING on borrow = %r" % (i, pong))
                    continue
                step(i, conn)
            except Exception as e:  # every error counts: no retry
                failures.append("conn %d: %s: %s" % (i, type(e).__name__, e))
    except Exception as e:
        failures.append("borrow: %s: %s" % (type(e).__name__, e))
    finally:
        for conn in conns:
            pool.release(conn)
    return failures


pool = new_pool(PoolConnection, size)
sub_pool = new_pool(SubConnection, 1)


def warm(i, conn):
    if do(conn, "SET", prefix + "before:%d" % i, "b%d" % i) not in (b"OK", "OK"):
        raise RuntimeError("SET before:%d did not answer OK" % i)


failures = borrow_all(pool, warm)
if failures:
    emit("fatal", json.dumps(failures))
    sys.exit(1)

ps = redis.Redis(connection_pool=sub_pool).pubsub()
ps.subscribe(channel)
listener_errors, other = [], []
stopping = threading.Event()
subscribed = threading.Event()


def listen():
    # Bounded: it ends at "quit", or after 200 errors (each one costs at
    # least the reconnect redis-py attempts on the next read).
    while not stopping.is_set() and len(listener_errors) < 200:
        try:
            m = ps.get_message(timeout=0.2)
        except Exception as e:
            listener_errors.append("%s: %s" % (type(e).__name__, e))
            stopping.wait(0.05)
            continue
        if m is None:
            continue
        if m["type"] == "message":
            emit("msg", m["data"].decode())
        elif m["type"] == "subscribe" and not subscribed.is_set():
            subscribed.set()
        else:
            other.append(repr(m))


listener = threading.Thread(target=listen, daemon=True)
listener.start()
if not subscribed.wait(10):
    emit("fatal", json.dumps(["no subscribe confirmation within 10 s"]))
    sys.exit(1)
setup = PoolConnection.opened + SubConnection.opened
emit("ready", json.dumps({"setup": setup}))


def check(i, conn):
    got = do(conn, "GET", prefix + "before:%d" % i)
    if got != b"b%d" % i:
        raise RuntimeError("GET before:%d = %r, want b%d" % (i, got, i))
    if do(conn, "SET", prefix + "after:%d" % i, "a%d" % i) not in (b"OK", "OK"):
        raise RuntimeError("SET after:%d did not answer OK" % i)


for line in sys.stdin:
    cmd = line.strip()
    if cmd == "check":
        f = borrow_all(pool, check)
        emit("checked", json.dumps({"borrowed": size, "failures": f}))
    elif cmd == "quit":
        break

stopping.set()
listener.join(5)
ps.close()
pool.disconnect()
sub_pool.disconnect()
emit("summary", json.dumps({
    "setup": setup,
    "opened": PoolConnection.opened + SubConnection.opened,
    "listener_errors": listener_errors,
    "other": other,
    "note": "pool sockets opened %d, pub/sub sockets opened %d" % (PoolConnection.opened, SubConnection.opened),
}))
