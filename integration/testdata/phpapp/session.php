<?php
// A page that counts one browser's visits in its PHP session, stored by
// phpredis's session handler through sentinel-proxy. The handler is set up
// in php.ini (examples/php/php.ini; the integration test passes the same
// settings with -d): session.save_handler=redis, session.save_path with
// auth, database and prefix, redis.session.locking_enabled=1.
//
//   GET /session.php          $_SESSION['n']++, answers "ok n=<n> sid=<id>"
//   GET /session.php?peek=1   answers the counter without changing it
//
// When the session store fails the page answers 503 "error <what>" and
// nothing was counted: the browser may retry. It never answers 200 for an
// increment that was not written, so a client can count what was stored.
declare(strict_types=1);

header('Content-Type: text/plain; charset=utf-8');

// fail answers 503: the store did not do what this request needed.
function fail(string $what): never
{
    http_response_code(503);
    echo "error $what\n";
    exit;
}

// The session functions report a failed store with a warning or notice
// and carry on: session_start() goes on without the lock it could not take
// (phpredis then refuses the write), session_write_close() returns true
// even when the write failed. Collect those messages (PHP still logs them)
// and answer 503 when there were any.
$sessionErrors = [];
set_error_handler(function (int $no, string $msg) use (&$sessionErrors): bool {
    if (str_starts_with($msg, 'session_')) {
        $sessionErrors[] = $msg;
    }
    return false; // PHP's own handler logs it as usual
});

$peek = isset($_GET['peek']);
if (!session_start($peek ? ['read_and_close' => true] : []) || $sessionErrors) {
    if (session_status() === PHP_SESSION_ACTIVE) {
        session_abort();
    }
    fail('session start');
}
$n = (int)($_SESSION['n'] ?? 0);
if (!$peek) {
    $_SESSION['n'] = ++$n;
    $_SESSION['last'] = date(DATE_ATOM);
    // The write (and the lock release) happen here, not at exit, so that a
    // failed write turns into an error answer, not a 200.
    session_write_close();
    if ($sessionErrors) {
        fail('session write');
    }
}
echo 'ok n=', $n, ' sid=', session_id(), "\n";
