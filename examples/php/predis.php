<?php
// predis (Debian php-predis 1.1) through sentinel-proxy, as an application
// store. integration/testdata/phpapp/predis.php is a page built on this set
// up; TestPHPApp runs it across a failover and a kill of the master.
//
// Point predis at the proxy as if it were one Redis server. Do not use
// predis's own Sentinel support ('replication' => 'sentinel'): the proxy
// follows the master, and the application keeps one address.
declare(strict_types=1);

require '/usr/share/php/Predis/Autoloader.php'; // or Composer's vendor/autoload.php
Predis\Autoloader::register();

function redis_client(): Predis\Client
{
    return new Predis\Client([
        'scheme' => 'tcp',
        'host' => '127.0.0.1',
        'port' => 6380,
        // Sent as AUTH, then SELECT, on every new connection; the proxy
        // replays both on the new master after a failover. With an ACL
        // user add 'username' => '...'.
        'password' => getenv('REDIS_PASSWORD') ?: null,
        'database' => 3,
        // Connect timeout (s).
        'timeout' => 2.0,
        // Read/write timeout (s): above the proxy's hold_timeout (default
        // 5 s), which is how long a command may wait for a new master.
        'read_write_timeout' => 15.0,
    ]);
    // No 'prefix' option here: predis 1.1's key prefix processor logs a
    // PHP 8.2 deprecation ("Use of "static" in callables") on every
    // prefixed command. Put the prefix in the key names yourself.
}

// A failed command throws a Predis\PredisException: a connection error
// (Predis\Connection\ConnectionException) or an error reply
// (Predis\Response\ServerException). A write in flight when the master
// crashed is answered "ERR connection to the master lost before the reply;
// the command may have run (sentinel-proxy)": it may or may not have been
// applied. Fail the request (or retry if the write is idempotent); do not
// report success.
function visits(Predis\Client $redis, string $user): int
{
    $key = 'myapp:visits:' . $user;
    try {
        $n = (int)$redis->incr($key);
        $redis->expire($key, 1440);
        return $n;
    } catch (Predis\PredisException $e) {
        error_log('visits: ' . $e->getMessage()); // no password in these messages
        throw $e;
    }
}
