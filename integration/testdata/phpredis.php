<?php
// Plain phpredis (5.3.7) through sentinel-proxy.
//
//   php phpredis.php HOST PORT PASSWORD PREFIX
//
// PASSWORD may be "" (no AUTH). Works in db 4. Prints one line per check and
// PASS at the end; exits 1 at the first failed check.

[, $host, $port, $password, $prefix] = $argv;

function check(bool $cond, string $what): void
{
    if (!$cond) {
        echo "FAIL: $what\n";
        exit(1);
    }
    echo "ok: ", explode(':', $what)[0], "\n";
}

function client(string $host, string $port, string $password): Redis
{
    $r = new Redis();
    check($r->connect($host, (int)$port, 5.0), "connect");
    if ($password !== '') {
        check($r->auth($password) === true, "auth");
    }
    check($r->select(4) === true, "select 4");
    return $r;
}

$r = client($host, $port, $password);
$k = fn(string $name): string => $prefix . $name;

check($r->ping() === true, "ping");
check($r->set($k('s'), "v\0bin\r\n") === true, "set");
check($r->get($k('s')) === "v\0bin\r\n", "get");
check($r->get($k('missing')) === false, "get missing");
check($r->incr($k('n')) === 1, "incr");

$res = $r->pipeline()
    ->set($k('p'), '1')
    ->incr($k('p'))
    ->get($k('p'))
    ->exec();
check($res === [true, 2, '2'], "pipeline: " . json_encode($res));

$res = $r->multi()
    ->incr($k('m'))
    ->incrBy($k('m'), 4)
    ->get($k('m'))
    ->exec();
check($res === [1, 5, '5'], "multi/exec: " . json_encode($res));

$other = client($host, $port, $password);
check($r->watch($k('w')) === true, "watch");
$other->set($k('w'), 'other');
$res = $r->multi()->set($k('w'), 'mine')->exec();
check($res === false, "watch conflict aborts exec: " . json_encode($res));
check($r->get($k('w')) === 'other', "watched key kept");

check($r->eval("return {KEYS[1], ARGV[1]}", [$k('e'), 'x'], 1) === [$k('e'), 'x'], "eval");
$info = $r->rawCommand('CLIENT', 'INFO');
check(strpos($info, ' db=4 ') !== false, "client info in db 4: $info");

try {
    $r->rawCommand('NOSUCHCOMMAND');
    $err = $r->getLastError();
} catch (RedisException $e) {
    $err = $e->getMessage();
}
check(is_string($err) && strpos($err, 'unknown command') !== false, "error reply: " . json_encode($err));
check($r->echo('in step') === 'in step', "echo after error");

check($r->del([$k('s'), $k('n'), $k('p'), $k('m'), $k('w')]) === 5, "del");
check($r->set($k('final'), 'db4') === true, "final set");
$r->close();
$other->close();
echo "PASS\n";
