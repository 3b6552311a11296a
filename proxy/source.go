package proxy

// MasterSource tells the proxy where the master of its group is. The
// sentinel.Watcher implements it; tests use small fakes.
type MasterSource interface {
	// Master returns the address ("host:port") of the verified master, or ""
	// while none is known (failover in progress, nothing verified yet), and a
	// channel that is closed at the next change of either. It never blocks.
	Master() (addr string, changed <-chan struct{})

	// Suspect reports that addr answered like a node that is no longer master
	// (a -READONLY reply, or an EOF right after a CLIENT KILL). The source
	// should re-check at once; it must not block the caller.
	Suspect(addr string)
}

// Fencer is implemented by a MasterSource that can tell when the master
// being failed over may already have been replaced (Sentinel selected a
// replica and is promoting it). A write that master acknowledges from then
// on may be lost with it: the proxy answers it "may have run" instead.
// sentinel.Watcher implements it.
type Fencer interface {
	// Fenced returns that master's address, or "". A change closes the
	// channel Master returns.
	Fenced() string
}

// sourceBox holds the server's current source; swapped is closed when
// SetSource replaces it, so that waits on the old source end.
type sourceBox struct {
	MasterSource
	swapped chan struct{}
}

// source returns the current master source.
func (s *Server) source() *sourceBox { return s.src.Load() }

// SetSource replaces the master source (a reload with new sentinels starts a
// new watcher). Commands waiting for a master re-check at once; connections
// follow the new source's master as they would a failover.
func (s *Server) SetSource(src MasterSource) {
	old := s.src.Swap(&sourceBox{MasterSource: src, swapped: make(chan struct{})})
	close(old.swapped)
}
