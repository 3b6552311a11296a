package integration

import (
	"go.uber.org/zap"

	"github.com/sentinel-proxy/sentinel-proxy/integration/topology"
	"github.com/sentinel-proxy/sentinel-proxy/proxy"
	"github.com/sentinel-proxy/sentinel-proxy/sentinel"
)

// watcherSource is the master source every stack runs: the real watcher.
type watcherSource = sentinel.Watcher

var _ proxy.MasterSource = (*watcherSource)(nil)

// newWatcherSource builds a watcher for topo's sentinels. password is the
// data nodes' password, used for the watcher's ROLE checks.
func newWatcherSource(topo *topology.Topology, password string, log *zap.Logger) (*watcherSource, error) {
	return sentinel.New(sentinel.Options{
		MasterName:   topo.MasterName(),
		Sentinels:    topo.SentinelAddrs(),
		DataPassword: password,
	}, log.Named("watcher"))
}
