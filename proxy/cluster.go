package proxy

import (
	"context"

	"github.com/sentinel-proxy/sentinel-proxy/proxy/cluster"
)

// ClusterOptions make a group a Redis Cluster (Options.Cluster).
type ClusterOptions struct {
	// Router is the live slot map. The caller starts it (Router.Start)
	// and closes it after Serve returns.
	Router *cluster.Router
	// FetchCommands reads the key positions of every command from the
	// cluster (cluster.FetchCommands on its nodes). The server calls it
	// from Serve until it succeeds; commands with keys wait for it.
	FetchCommands func(ctx context.Context) (cluster.Table, error)
}

// anyMaster is the master source of a cluster group's commands that have no
// slot (and of its subscribers): the first master of the slot map.
type anyMaster struct{ r *cluster.Router }

func (a *anyMaster) Master() (string, <-chan struct{}) {
	ch := a.r.Changed()
	m := a.r.Masters()
	if len(m) == 0 {
		return "", ch
	}
	return m[0], ch
}

func (a *anyMaster) Suspect(string) { a.r.RequestRefresh() }
