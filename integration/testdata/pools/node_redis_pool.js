// A Tomcat-style node-redis (Debian 4.5.1) client through sentinel-proxy.
//
// Usage: NODE_PATH=/usr/share/nodejs /usr/bin/node node_redis_pool.js \
//          HOST PORT PASSWORD DB PREFIX CHANNEL SIZE
//
// What Jedis' pool (tomcat-redis-session-manager) and Redisson do, with
// node-redis: a generic-pool (Debian's generic-pool 3, the Node
// counterpart of commons-pool2) of SIZE long-lived node-redis clients that
// AUTH and SELECT DB once, when they connect; testOnBorrow with a PING
// validator, as Jedis' testOnBorrow; and a long-lived subscriber made with
// duplicate() (Redisson's topic listener). No retries: node-redis does not
// retry commands, disableOfflineQueue makes a command sent while a socket
// reconnects fail instead of waiting, and every 'connect' (node-redis
// reconnects a closed socket silently), 'error' and failed validation is
// counted, so nothing a failover did is hidden.
//
// The line protocol on stdin/stdout is the one of redis_py_pool.py.
'use strict';
const readline = require('readline');
const { createClient } = require('redis');
const genericPool = require('generic-pool');

const [host, portS, password, dbS, prefix, channel, sizeS] = process.argv.slice(2);
const port = Number(portS), db = Number(dbS), size = Number(sizeS);

const emit = (tag, payload) => process.stdout.write(tag + ' ' + payload + '\n');
const counts = { created: 0, connects: 0, validateFailed: 0, subConnects: 0 };
const listenerErrors = [];
const poolErrors = [];

const options = {
  socket: { host, port, connectTimeout: 5000 },
  password: password || undefined,
  database: db,
  disableOfflineQueue: true,
};

const pool = genericPool.createPool({
  async create() {
    const c = createClient(options);
    c.on('connect', () => counts.connects++);
    c.on('error', (err) => poolErrors.push(String(err)));
    await c.connect();
    counts.created++;
    return c;
  },
  async destroy(c) {
    await c.disconnect();
  },
  async validate(c) {
    // testOnBorrow: a failed PING makes generic-pool destroy the client and
    // create another, which counts.created shows.
    try {
      const ok = (await c.ping()) === 'PONG';
      if (!ok) counts.validateFailed++;
      return ok;
    } catch (err) {
      counts.validateFailed++;
      poolErrors.push('validate: ' + err);
      return false;
    }
  },
}, { min: size, max: size, testOnBorrow: true, acquireTimeoutMillis: 10000, evictionRunIntervalMillis: 0 });

// borrowAll borrows every client at once (each its own socket), runs step
// on each after an explicit PING, and returns the failures.
async function borrowAll(step) {
  const failures = [];
  let clients = [];
  try {
    clients = await Promise.all(Array.from({ length: size }, () => pool.acquire()));
    for (const [i, c] of clients.entries()) {
      try {
        const pong = await c.ping();
        if (pong !== 'PONG') {
          failures.push(`conn ${i}: PING on borrow = ${pong}`);
          continue;
        }
        await step(i, c);
      } catch (err) {
        failures.push(`conn ${i}: ${err}`);
      }
    }
  } catch (err) {
    failures.push('borrow: ' + err);
  } finally {
    await Promise.all(clients.map((c) => pool.release(c)));
  }
  return failures;
}

async function main() {
  const warm = await borrowAll(async (i, c) => {
    const r = await c.set(prefix + 'before:' + i, 'b' + i);
    if (r !== 'OK') throw new Error(`SET before:${i} = ${r}`);
  });
  if (warm.length > 0) throw new Error(JSON.stringify(warm));

  // The subscriber: a duplicate of the first connection's options.
  const base = createClient(options);
  const sub = base.duplicate();
  sub.on('connect', () => counts.subConnects++);
  sub.on('error', (err) => listenerErrors.push(String(err)));
  await sub.connect();
  await sub.subscribe(channel, (message) => emit('msg', message));
  const setup = counts.connects + counts.subConnects;
  emit('ready', JSON.stringify({ setup }));

  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const cmd = line.trim();
    if (cmd === 'check') {
      const failures = await borrowAll(async (i, c) => {
        const got = await c.get(prefix + 'before:' + i);
        if (got !== 'b' + i) throw new Error(`GET before:${i} = ${got}, want b${i}`);
        const r = await c.set(prefix + 'after:' + i, 'a' + i);
        if (r !== 'OK') throw new Error(`SET after:${i} = ${r}`);
      });
      if (counts.validateFailed > 0) failures.push(`${counts.validateFailed} testOnBorrow PINGs failed`);
      failures.push(...poolErrors.splice(0));
      emit('checked', JSON.stringify({ borrowed: size, failures }));
    } else if (cmd === 'quit') {
      break;
    }
  }
  rl.close();
  await sub.unsubscribe(channel);
  await sub.quit();
  await pool.drain();
  await pool.clear();
  emit('summary', JSON.stringify({
    setup,
    opened: counts.connects + counts.subConnects,
    listener_errors: listenerErrors,
    other: [],
    note: `pool clients created ${counts.created}, pool sockets connected ${counts.connects}, ` +
      `subscriber sockets connected ${counts.subConnects}, failed validations ${counts.validateFailed}`,
  }));
}

main().catch((err) => {
  emit('fatal', JSON.stringify([String(err && err.stack || err)]));
  process.exit(1);
});
