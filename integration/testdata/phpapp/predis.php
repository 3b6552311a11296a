<?php
// A page that keeps a per-browser counter in an application-level store
// written with predis (Debian php-predis) through sentinel-proxy, the way
// framework session and cache handlers do: GET the record, change it, SETEX
// it back. The browser is known by a random "uid" cookie.
//
// Connection settings come from the environment (APP_REDIS_HOST,
// APP_REDIS_PORT, APP_REDIS_PASSWORD, APP_REDIS_DB, APP_REDIS_PREFIX); see
// examples/php/predis.php for the same client set-up with comments.
//
//   GET /predis.php          counter++, answers "ok n=<n> uid=<uid>"
//   GET /predis.php?peek=1   answers the counter without changing it
//
// When Redis fails the page answers 503 "error <what>": nothing was stored.
declare(strict_types=1);

require '/usr/share/php/Predis/Autoloader.php';
Predis\Autoloader::register();

header('Content-Type: text/plain; charset=utf-8');

$uid = $_COOKIE['uid'] ?? '';
if (!is_string($uid) || !preg_match('/^[0-9a-f]{32}$/', $uid)) {
    $uid = bin2hex(random_bytes(16));
    setcookie('uid', $uid, ['httponly' => true, 'samesite' => 'Lax']);
}

$redis = new Predis\Client([
    'scheme' => 'tcp',
    'host' => getenv('APP_REDIS_HOST') ?: '127.0.0.1',
    'port' => (int)(getenv('APP_REDIS_PORT') ?: 6379),
    'password' => getenv('APP_REDIS_PASSWORD') ?: null,
    'database' => (int)(getenv('APP_REDIS_DB') ?: 0),
    'timeout' => 2.0,             // connect
    'read_write_timeout' => 15.0, // above the proxy's hold timeout (10 s)
]);

// The prefix is added by hand: predis 1.1's 'prefix' option logs a PHP 8.2
// deprecation ("static" in callables) on every command.
$key = (getenv('APP_REDIS_PREFIX') ?: 'app:') . 'user:' . $uid;
try {
    $raw = $redis->get($key);
    $data = is_string($raw) ? json_decode($raw, true, 4, JSON_THROW_ON_ERROR) : [];
    $n = (int)($data['n'] ?? 0);
    if (!isset($_GET['peek'])) {
        $data['n'] = ++$n;
        $data['last'] = date(DATE_ATOM);
        $redis->setex($key, 1440, json_encode($data, JSON_THROW_ON_ERROR));
    }
} catch (Predis\PredisException $e) {
    // Connection failures and error replies: log them (without the
    // connection parameters) and tell the browser to retry.
    error_log('predis.php: ' . get_class($e) . ': ' . $e->getMessage());
    http_response_code(503);
    echo "error redis\n";
    exit;
}
echo 'ok n=', $n, ' uid=', $uid, "\n";
