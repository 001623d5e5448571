package bluez

// HealthChecks counts the health checks the adapter completed, so that
// a test waits for a number of them rather than for a time.
func (a *Adapter) HealthChecks() uint64 { return a.healthRuns.Load() }
