<?php
// One PHP request using the phpredis session handler (configured with -d
// session.save_handler=redis and session.save_path by the caller).
//
//   php session.php write VALUE   starts a new session, stores VALUE, prints id=<id>
//   php session.php read ID       resumes session ID, prints value=<value> and
//                                 counter=<n> (incremented on every request)

$mode = $argv[1] ?? '';
if ($mode === 'write') {
    if (!session_start()) {
        echo "FAIL: session_start\n";
        exit(1);
    }
    $_SESSION['value'] = $argv[2];
    $_SESSION['counter'] = 1;
    echo "id=", session_id(), "\n";
} elseif ($mode === 'read') {
    session_id($argv[2]);
    if (!session_start()) {
        echo "FAIL: session_start\n";
        exit(1);
    }
    echo "value=", $_SESSION['value'] ?? '(none)', "\n";
    $_SESSION['counter'] = ($_SESSION['counter'] ?? 0) + 1;
    echo "counter=", $_SESSION['counter'], "\n";
} else {
    echo "usage: session.php write VALUE | read ID\n";
    exit(2);
}
if (!session_write_close()) {
    echo "FAIL: session_write_close\n";
    exit(1);
}
echo "done\n";
