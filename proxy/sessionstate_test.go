package proxy

import "testing"

// TestSessionStateTransitions walks the transaction and pin rules through
// the sequences a client and a failing connection produce.
func TestSessionStateTransitions(t *testing.T) {
	type step struct {
		name string
		do   func(*sessionState)
		want sessionState
	}
	settle := func(k cmdKind) func(*sessionState) { return func(st *sessionState) { st.settle(k) } }
	cases := []struct {
		name  string
		steps []step
	}{
		{"watch, multi, exec", []step{
			{"WATCH", (*sessionState).watch, sessionState{tx: txWatch}},
			{"MULTI", (*sessionState).multi, sessionState{tx: txMulti}},
			{"WATCH inside MULTI is refused: no change", nil, sessionState{tx: txMulti}},
			{"UNWATCH queued in MULTI", (*sessionState).unwatch, sessionState{tx: txMulti}},
			{"EXEC", (*sessionState).txEnd, sessionState{}},
		}},
		{"unwatch ends a watch", []step{
			{"WATCH", (*sessionState).watch, sessionState{tx: txWatch}},
			{"UNWATCH", (*sessionState).unwatch, sessionState{}},
		}},
		{"a lost MULTI is answered until EXEC", []step{
			{"MULTI", (*sessionState).multi, sessionState{tx: txMulti}},
			{"CLIENT NO-EVICT", (*sessionState).stick, sessionState{tx: txMulti, pins: pinClient}},
			{"connection lost", (*sessionState).connLost, sessionState{tx: txLost}},
			{"EXEC answered by the proxy", settle(kindExec), sessionState{}},
		}},
		{"a lost WATCH fails the next EXEC", []step{
			{"WATCH", (*sessionState).watch, sessionState{tx: txWatch}},
			{"connection lost", (*sessionState).connLost, sessionState{watchLost: true}},
			{"MULTI on a new connection", (*sessionState).multi, sessionState{tx: txMulti, watchLost: true}},
			{"connection lost again", (*sessionState).connLost, sessionState{tx: txLost}},
		}},
		{"lost WATCH, then a MULTI that may have run", []step{
			{"WATCH", (*sessionState).watch, sessionState{tx: txWatch}},
			{"connection lost", (*sessionState).connLost, sessionState{watchLost: true}},
			// Its EXEC (EXECABORT) ends the watches too: a later
			// transaction must not fail for the old WATCH.
			{"MULTI may have run", settle(kindMulti), sessionState{tx: txLost}},
			{"WATCH may have run inside it", settle(kindWatch), sessionState{tx: txLost}},
		}},
		{"WATCH that may have run", []step{
			{"WATCH may have run", settle(kindWatch), sessionState{watchLost: true}},
			{"UNWATCH may have run", settle(kindUnwatch), sessionState{}},
		}},
		{"client name pins and is kept across a loss", []step{
			{"SETNAME app", func(st *sessionState) { st.setName("app") }, sessionState{name: "app", pins: pinName}},
			{"CLIENT ID", (*sessionState).stick, sessionState{name: "app", pins: pinName | pinClient}},
			{"connection lost", (*sessionState).connLost, sessionState{name: "app", pins: pinName}},
			{`SETNAME ""`, func(st *sessionState) { st.setName("") }, sessionState{}},
		}},
		{"RESET forgets everything", []step{
			{"SETNAME app", func(st *sessionState) { st.setName("app") }, sessionState{name: "app", pins: pinName}},
			{"WATCH", (*sessionState).watch, sessionState{tx: txWatch, name: "app", pins: pinName}},
			{"RESET", (*sessionState).reset, sessionState{}},
		}},
	}
	for _, c := range cases {
		var st sessionState
		for _, s := range c.steps {
			if s.do != nil {
				s.do(&st)
			}
			if st != s.want {
				t.Fatalf("%s: after %s: state %+v, want %+v", c.name, s.name, st, s.want)
			}
		}
	}
}

// TestPinReasons checks which states need one connection and which are
// broken by a loss.
func TestPinReasons(t *testing.T) {
	for _, c := range []struct {
		st       sessionState
		pins     pinSet
		txBroken bool
	}{
		{sessionState{}, 0, false},
		{sessionState{tx: txWatch}, pinTx, false},
		{sessionState{tx: txMulti, watchLost: true}, pinTx, true},
		{sessionState{tx: txLost}, 0, true},
		{sessionState{watchLost: true}, 0, true},
		{sessionState{name: "a", pins: pinName}, pinName, false},
		{sessionState{pins: pinClient, tx: txMulti}, pinClient | pinTx, false},
	} {
		if got := c.st.pinReasons(); got != c.pins {
			t.Errorf("%+v: pinReasons %b, want %b", c.st, got, c.pins)
		}
		if got := c.st.needsPin(); got != (c.pins != 0) {
			t.Errorf("%+v: needsPin %v", c.st, got)
		}
		if got := c.st.txBroken(); got != c.txBroken {
			t.Errorf("%+v: txBroken %v, want %v", c.st, got, c.txBroken)
		}
	}
}
