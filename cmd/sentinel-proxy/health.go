package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Defaults of `sentinel-proxy health`: the readiness endpoint of an admin
// endpoint started with --admin 0.0.0.0:9121 (or 127.0.0.1:9121), as the
// Dockerfile's HEALTHCHECK expects.
const (
	defaultHealthURL     = "http://127.0.0.1:9121/readyz"
	defaultHealthTimeout = 2 * time.Second

	// healthBodyLimit bounds what is read of the endpoint's answer; /readyz
	// says why in one or two short lines.
	healthBodyLimit = 4 << 10
)

// runHealth is `sentinel-proxy health`: one HTTP GET of the admin endpoint,
// for a container HEALTHCHECK in an image without a shell or curl. It
// returns nil on 200 (printing the endpoint's answer to stdout) and an error
// carrying the status and the endpoint's reason otherwise; main turns that
// into exit status 1, which Docker counts as unhealthy.
func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sentinel-proxy health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", defaultHealthURL, "`URL` to GET: /readyz (a verified master) or /healthz (process up)")
	timeout := fs.Duration("timeout", defaultHealthTimeout, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: sentinel-proxy health [--url URL] [--timeout 2s]\n\n"+
			"GETs the admin endpoint (the proxy must run with --admin, e.g. --admin 0.0.0.0:9121)\n"+
			"and exits 0 on 200, 1 otherwise, printing the endpoint's reason. Meant for a\n"+
			"container HEALTHCHECK; the image has no shell or curl.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("health: unexpected argument %q", fs.Arg(0))}
	}
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("health: --url %q is not an http(s) URL with a host", *rawURL)}
	}
	if *timeout <= 0 {
		return usageError{fmt.Errorf("health: --timeout %v must be greater than 0", *timeout)}
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	body, status, err := healthGet(ctx, u.String())
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("health %s: no answer within %v", u, *timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("health %s: %w (is the admin endpoint on, e.g. --admin 0.0.0.0:%s?)", u, err, portOr(u, "80"))
	case err != nil:
		return fmt.Errorf("health %s: %w", u, err)
	}
	if status != http.StatusOK {
		reason := oneLine(body)
		if reason == "" {
			reason = "no reason given"
		}
		return fmt.Errorf("health %s: %d %s: %s", u, status, http.StatusText(status), reason)
	}
	if b := strings.TrimSpace(body); b != "" {
		fmt.Fprintln(stdout, b)
	}
	return nil
}

// healthGet GETs rawURL directly, ignoring HTTP_PROXY and the like (a
// container's proxy settings must not route a check of its own loopback)
// and not following redirects (a redirect is not a healthy answer). It
// returns the start of the body and the status code.
func healthGet(ctx context.Context, rawURL string) (body string, status int, err error) {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the caller names the URL
		}
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, healthBodyLimit))
	if err != nil && resp.StatusCode == http.StatusOK {
		return "", 0, fmt.Errorf("read answer: %w", err)
	}
	return string(b), resp.StatusCode, nil
}

// oneLine joins the non-empty lines of s with "; ", for an error message.
func oneLine(s string) string {
	var parts []string
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// portOr is u's port, or def when the URL has none.
func portOr(u *url.URL, def string) string {
	if p := u.Port(); p != "" {
		return p
	}
	return def
}
