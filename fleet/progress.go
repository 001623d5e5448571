package fleet

// Progress is the scheduler's part of the daemon's progress watchdog.
// waiting is the work in hand: commands submitted and not yet admitted,
// and commands running (an attempt on its way); a command that waits for
// its lock (out of range, in backoff) is not. done counts the steps the
// scheduler made: admissions, attempts begun, link errors and journal
// writes (every outcome is one): a scheduler with work in hand that makes
// no step is stuck, on the journal (a disk that stays full) or on a lock
// that never answers within its timeouts.
func (s *Scheduler) Progress() (waiting int, done uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	waiting = len(s.inbox)
	for _, lq := range s.locks {
		for _, j := range lq.jobs {
			if j.running {
				waiting++
			}
		}
	}
	return waiting, s.steps.Load()
}
