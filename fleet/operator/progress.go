package operator

// Progress is the Intake's part of the daemon's progress watchdog:
// waiting is the messages received and not yet released, done the
// messages decided (journaled, duplicate or refused). An intake that
// cannot journal (it retries the batch) decides nothing.
func (in *Intake) Progress() (waiting int, done uint64) {
	return int(in.depth.Load()), in.journaled.Load() + in.duplicates.Load() + in.refused.Load()
}

// Progress is the Outbox's part of the daemon's progress watchdog:
// waiting is the results in the outbox as of the last pass, done the
// results published and removed. The daemon counts it only while the
// MQTT session is connected: without a broker, results wait by design.
func (o *Outbox) Progress() (waiting int, done uint64) {
	return int(o.pending.Load()), o.published.Load()
}

// Progress is the Presence's part of the daemon's progress watchdog:
// waiting is 1 while the latest snapshot differs from the last one the
// broker acknowledged, done the snapshots published. As for the Outbox,
// the daemon counts it only while connected.
func (p *Presence) Progress() (waiting int, done uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.latest != nil && (p.acked == nil || !p.latest.sameAs(p.acked)) {
		waiting = 1
	}
	return waiting, p.published.Load()
}
