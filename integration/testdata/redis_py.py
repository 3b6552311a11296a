"""redis-py (4.3.4, RESP2) through sentinel-proxy.

Usage: /usr/bin/python3 redis_py.py HOST PORT PASSWORD PREFIX
PASSWORD may be "" (no AUTH). Every key starts with PREFIX. Prints one line
per check and "PASS" at the end; exits 1 at the first failed check.
"""
import sys
import time

import redis

host, port, password, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4]


def check(cond, what):
    if not cond:
        print("FAIL: " + what)
        sys.exit(1)
    print("ok: " + what.split(":")[0])


def k(name):
    return prefix + name


r = redis.Redis(host=host, port=port, password=password, socket_timeout=10)
other = redis.Redis(host=host, port=port, password=password, socket_timeout=10)

# Basic operations.
check(r.ping() is True, "ping")
check(r.set(k("s"), b"v\x00\r\nbin") is True, "set")
got = r.get(k("s"))
check(got == b"v\x00\r\nbin", "get: %r" % got)
check(r.get(k("missing")) is None, "get missing")
check(r.incr(k("n")) == 1 and r.incrby(k("n"), 9) == 10, "incr")
r.hset(k("h"), mapping={"a": "1", "b": "2"})
got = r.hgetall(k("h"))
check(got == {b"a": b"1", b"b": b"2"}, "hgetall: %r" % got)
r.rpush(k("l"), "x", "y", "z")
got = r.lrange(k("l"), 0, -1)
check(got == [b"x", b"y", b"z"], "lrange: %r" % got)
r.expire(k("s"), 100)
check(0 < r.ttl(k("s")) <= 100, "ttl")
try:
    r.execute_command("NOSUCHCOMMAND")
    check(False, "unknown command raised nothing")
except redis.ResponseError as e:
    check(str(e).startswith("unknown command"), "error reply: %s" % e)
check(r.echo("still in step") == b"still in step", "echo after error")
check(r.delete(k("s"), k("n"), k("h"), k("l")) == 4, "delete")

# Pipeline without transaction: 500 SETs and INCRs in one round trip.
p = r.pipeline(transaction=False)
for i in range(500):
    p.set(k("p%d" % i), i)
    p.incr(k("pcount"))
res = p.execute()
check(len(res) == 1000 and res[-1] == 500 and all(x is True for x in res[0::2]), "pipeline transaction=False: %r" % res[-3:])
got = r.mget([k("p%d" % i) for i in range(500)])
check(got == [str(i).encode() for i in range(500)], "pipeline values")

# Pipeline with transaction (MULTI/EXEC).
p = r.pipeline(transaction=True)
p.incr(k("tx")).incr(k("tx")).get(k("tx"))
res = p.execute()
check(res == [1, 2, b"2"], "pipeline transaction=True: %r" % res)

# Optimistic transaction: a concurrent write makes EXEC fail.
with r.pipeline() as pipe:
    pipe.watch(k("w"))
    pipe.get(k("w"))
    other.set(k("w"), "other")
    pipe.multi()
    pipe.set(k("w"), "mine")
    try:
        pipe.execute()
        check(False, "watch: EXEC succeeded after a concurrent write")
    except redis.WatchError:
        check(r.get(k("w")) == b"other", "watch conflict")

# Pub/sub with a bounded get_message loop.
ps = r.pubsub()
ps.subscribe(k("ch"))
ps.psubscribe(k("pat.*"))
confirmed = []
deadline = time.time() + 10
while len(confirmed) < 2 and time.time() < deadline:
    m = ps.get_message(timeout=1.0)
    if m is not None:
        confirmed.append(m["type"])
check(sorted(confirmed) == ["psubscribe", "subscribe"], "subscribe confirmations: %r" % confirmed)
for i in range(20):
    other.publish(k("ch"), "m%d" % i)
    other.publish(k("pat.%d" % i), "p%d" % i)
msgs = []
deadline = time.time() + 10
while len(msgs) < 40 and time.time() < deadline:
    m = ps.get_message(timeout=1.0)
    if m is not None:
        msgs.append(m)
plain = [m["data"] for m in msgs if m["type"] == "message"]
pat = [(m["pattern"], m["channel"], m["data"]) for m in msgs if m["type"] == "pmessage"]
check(plain == [("m%d" % i).encode() for i in range(20)], "pubsub messages: %r" % plain)
check(pat == [(k("pat.*").encode(), k("pat.%d" % i).encode(), ("p%d" % i).encode()) for i in range(20)], "pubsub pattern messages: %r" % pat[:3])
ps.unsubscribe()
ps.punsubscribe()
ps.close()

# StrictRedis in db 3 (SELECT on connect, after AUTH).
s = redis.StrictRedis(host=host, port=port, db=3, password=password, socket_timeout=10)
check(s.set(k("db3"), "three") is True, "db 3 set")
check(s.get(k("db3")) == b"three", "db 3 get")
info = s.execute_command("CLIENT", "INFO").decode()
check(" db=3 " in info, "db 3 client info: %s" % info)
check(r.get(k("db3")) is None, "db 0 does not see db 3's key")

print("PASS")
