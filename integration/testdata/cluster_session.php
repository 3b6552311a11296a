<?php
// phpredis sessions (session.save_handler=redis, session.save_path set by
// the caller with -d) through sentinel-proxy in front of a Redis Cluster,
// for cluster_clients_test.go. One PHP process plays many requests.
//
//   php cluster_session.php STOPFILE MAXREQ MAXSECONDS ID[,ID...]
//
// Request i resumes session ID[i % n], increments $_SESSION['n'] and
// writes it back; it prints "ok ID N" when the session handler reported
// no problem, else "error ID <messages>" (the write may or may not have
// happened). After the first 50 requests it prints "ready".
declare(strict_types=1);

[$stop, $maxReq, $maxSecs, $ids] = [$argv[1], (int)$argv[2], (float)$argv[3], explode(',', $argv[4])];

// The session functions report a failed store with a warning and carry on:
// collect every message.
$errors = [];
set_error_handler(function (int $no, string $msg) use (&$errors): bool {
    $errors[] = $msg;
    return true;
});

$deadline = microtime(true) + $maxSecs;
for ($i = 0; $i < $maxReq; $i++) {
    clearstatcache();
    if (file_exists($stop) || microtime(true) > $deadline) {
        break;
    }
    $id = $ids[$i % count($ids)];
    $errors = [];
    $n = -1;
    session_id($id);
    if (session_start()) {
        $n = (int)($_SESSION['n'] ?? 0) + 1;
        $_SESSION['n'] = $n;
        session_write_close();
    } elseif (session_status() === PHP_SESSION_ACTIVE) {
        session_abort();
    }
    if ($errors) {
        echo "error $id ", str_replace("\n", ' ', implode(' | ', $errors)), "\n";
    } else {
        echo "ok $id $n\n";
    }
    if ($i === 49) {
        echo "ready\n";
    }
    flush();
}
