// Package compose holds no code: it is the docker-compose example (a PHP
// application with sentinel-proxy as its sidecar, in front of 1 master,
// 2 replicas and 3 sentinels) and the tests that check it without a
// container engine.
//
// The tests parse docker-compose.yml, the Dockerfiles, the Redis and
// Sentinel configs, php.ini and sentinel-proxy.yaml and check that they
// agree with each other, with the proxy's own config loader and with the
// topology of the integration tests (integration/topology). Where
// redis-server is installed they also start every Redis and Sentinel config
// through redis/start.sh on loopback, with the host names rewritten to
// 127.0.0.1. Each test runs on its own goroutine; the processes a test
// starts are killed, by PID, in its cleanup.
package compose
