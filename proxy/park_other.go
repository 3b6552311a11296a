//go:build !linux

package proxy

import "context"

// parker is a no-op where epoll is missing: idle sessions keep their
// goroutine.
type parker struct{}

func newParker() (*parker, error)                           { return &parker{}, nil }
func (p *parker) park(*session) bool                        { return false }
func (p *parker) run(ctx context.Context, _ func(*session)) { <-ctx.Done() }
func (p *parker) close() []*session                         { return nil }
func (p *parker) count() int                                { return 0 }
