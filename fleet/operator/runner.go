package operator

import (
	"context"
	"sync"
)

// runner owns one background loop, as the Outbox and the Presence each
// have: start runs it once, close cancels it and waits for it.
type runner struct {
	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// start runs loop in a goroutine until ctx is done or close is called.
// It fails with ErrStarted after an earlier start or a close.
func (r *runner) start(ctx context.Context, loop func(context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.closed {
		return ErrStarted
	}
	r.started = true
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		loop(ctx)
	}()
	return nil
}

// close stops the loop and waits for it. It is idempotent.
func (r *runner) close() {
	r.mu.Lock()
	r.closed = true
	cancel := r.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	r.wg.Wait()
}

// isClosed reports whether close was called.
func (r *runner) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}
