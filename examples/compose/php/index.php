<?php
// A session counter: every visit increments a number stored in the PHP
// session, which lives in Redis behind sentinel-proxy (php.ini). Reload, fail
// the master over (README.md) and reload again: the count goes on.
declare(strict_types=1);

if (!session_start()) {
    // The reason (e.g. "Failed to read session data") is in the log.
    http_response_code(500);
    exit("session_start() failed\n");
}
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;
$visits = $_SESSION['visits'];
session_write_close(); // writes the session and releases its lock

// Which Redis node is the master now, asked through the proxy (it forwards
// every command to the master): the node's replica-announce-ip is its compose
// service name. Informational only; the counter does not depend on it.
$master = 'unknown';
try {
    $redis = new Redis();
    $redis->connect('proxy', 6380, 2.0, null, 0, 10.0);
    $redis->auth((string) getenv('REDIS_PASSWORD'));
    $conf = $redis->config('GET', 'replica-announce-ip');
    $master = $conf['replica-announce-ip'] ?? 'unknown';
    $redis->close();
} catch (RedisException $e) {
    $master = 'unknown (' . $e->getMessage() . ')';
}

header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
printf("visits in this session: %d\n", $visits);
printf("session id: %s\n", session_id());
printf("Redis master (through the proxy): %s\n", $master);
printf("served by %s at %s\n", gethostname(), date(DATE_ATOM));
