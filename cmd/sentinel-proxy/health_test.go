package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHealthCommand runs `sentinel-proxy health` through run against real
// loopback HTTP servers and checks the exit status and what it prints.
func TestHealthCommand(t *testing.T) {
	// The 503 body is what adminHandler's /readyz writes with no master.
	notReady := "no verified master for: mymaster (failover in progress: +switch-master seen)\n"
	serve := func(status int, body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/readyz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(status)
			w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/readyz"
	}
	// A port nothing listens on: bound, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/readyz"
	ln.Close()

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string   // substring of stdout
		wantErr    []string // substrings of the error / stderr
	}{
		{
			name:       "ready answers 200: exit 0, prints the answer",
			args:       []string{"--url", serve(http.StatusOK, "ready\nmymaster: a note\n")},
			wantCode:   0,
			wantStdout: "ready\nmymaster: a note",
		},
		{
			name:     "503 with a reason: exit 1, the reason on stderr",
			args:     []string{"--url", serve(http.StatusServiceUnavailable, notReady)},
			wantCode: 1,
			wantErr:  []string{"503 Service Unavailable", "no verified master for: mymaster (failover in progress: +switch-master seen)"},
		},
		{
			name:     "404 without the endpoint: exit 1",
			args:     []string{"--url", strings.TrimSuffix(serve(http.StatusOK, "ready"), "/readyz") + "/nope"},
			wantCode: 1,
			wantErr:  []string{"404 Not Found"},
		},
		{
			name:     "unreachable: exit 1, says to turn the admin endpoint on",
			args:     []string{"--url", closedURL, "--timeout", "5s"},
			wantCode: 1,
			wantErr:  []string{closedURL, "connection refused", "--admin 0.0.0.0:"},
		},
		{
			name:     "bad URL: usage error, exit 2",
			args:     []string{"--url", "127.0.0.1:9121/readyz"},
			wantCode: 2,
			wantErr:  []string{"not an http(s) URL"},
		},
		{
			name:     "bad timeout: usage error, exit 2",
			args:     []string{"--timeout", "0s"},
			wantCode: 2,
			wantErr:  []string{"--timeout 0s must be greater than 0"},
		},
		{
			name:     "stray argument: usage error, exit 2",
			args:     []string{"http://127.0.0.1:9121/readyz"},
			wantCode: 2,
			wantErr:  []string{"unexpected argument"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, append([]string{"health"}, tt.args...), &stdout, &stderr, noEnv)
			if code := exitCode(err, &stderr); code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d (err %v, stderr %q)", code, tt.wantCode, err, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", stdout.String(), tt.wantStdout)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr = %q, want it to contain %q", stderr.String(), want)
				}
			}
		})
	}
}

// TestHealthTimeout checks that a hung endpoint fails the check within its
// --timeout rather than hanging the HEALTHCHECK.
func TestHealthTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release) // runs before srv.Close: no handler left blocked

	var stdout, stderr bytes.Buffer
	began := time.Now()
	err := run(context.Background(), []string{"health", "--url", srv.URL + "/readyz", "--timeout", "200ms"}, &stdout, &stderr, noEnv)
	took := time.Since(began)
	if code := exitCode(err, &stderr); code != 1 {
		t.Fatalf("exit code = %d, want 1 (err %v)", code, err)
	}
	if !strings.Contains(stderr.String(), "no answer within 200ms") {
		t.Errorf("stderr = %q, want it to say no answer within 200ms", stderr.String())
	}
	if took > 5*time.Second {
		t.Errorf("took %v with --timeout 200ms", took)
	}
}

// TestHealthAgainstAdminHandler checks the health command against the real
// admin handler with no groups (so /readyz is ready) on both endpoints.
func TestHealthAgainstAdminHandler(t *testing.T) {
	srv := httptest.NewServer(adminHandler(&app{reloads: newReloadsCounter()}))
	defer srv.Close()
	for _, path := range []string{"/readyz", "/healthz"} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"health", "--url", srv.URL + path}, &stdout, &stderr, noEnv)
		if err != nil {
			t.Fatalf("health %s: %v", path, err)
		}
		if got := strings.TrimSpace(stdout.String()); got != "ready" && got != "ok" {
			t.Errorf("health %s printed %q", path, got)
		}
	}
}
