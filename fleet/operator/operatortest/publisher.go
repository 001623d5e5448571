// Package operatortest has fakes for tests of fleet/operator and of what
// uses it: a Publisher that records what is published and can fail or
// block.
package operatortest

import (
	"bytes"
	"context"
	"errors"
	"sync"
)

// ErrInjected is what Publish returns for a failure set by Fail or
// FailNext.
var ErrInjected = errors.New("operatortest: injected publish failure")

// Published is one message acknowledged by the fake broker.
type Published struct {
	Topic   string
	Payload []byte
	Retain  bool
}

// Publisher is a fake operator.Publisher. The zero value acknowledges
// every message at once.
type Publisher struct {
	mu       sync.Mutex
	msgs     []Published
	failing  bool
	failNext int
	attempts int
	blocked  chan struct{} // non-nil: Publish waits for it to close
	changed  chan struct{} // closed and replaced on every change
	// OnPublish, if set before use, is called (without locks held) after
	// a message was recorded, before Publish returns nil.
	OnPublish func(Published)
}

// Publish records the message and returns nil, unless a failure is set
// (ErrInjected, nothing recorded), the publisher is blocked (it waits for
// Unblock or ctx), or ctx is done.
func (p *Publisher) Publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	p.mu.Lock()
	p.attempts++
	block := p.blocked
	p.notifyLocked()
	p.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	if p.failing || p.failNext > 0 {
		if p.failNext > 0 {
			p.failNext--
		}
		p.notifyLocked()
		p.mu.Unlock()
		return ErrInjected
	}
	m := Published{Topic: topic, Payload: bytes.Clone(payload), Retain: retain}
	p.msgs = append(p.msgs, m)
	p.notifyLocked()
	hook := p.OnPublish
	p.mu.Unlock()
	if hook != nil {
		hook(m)
	}
	return nil
}

func (p *Publisher) notifyLocked() {
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

// Changed returns a channel closed at the next publish attempt or outcome.
func (p *Publisher) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// Fail makes every Publish fail (on true) or succeed again (on false).
func (p *Publisher) Fail(on bool) {
	p.mu.Lock()
	p.failing = on
	p.mu.Unlock()
}

// FailNext makes the next n Publish calls fail.
func (p *Publisher) FailNext(n int) {
	p.mu.Lock()
	p.failNext = n
	p.mu.Unlock()
}

// Block makes Publish wait until Unblock (or its ctx is done).
func (p *Publisher) Block() {
	p.mu.Lock()
	if p.blocked == nil {
		p.blocked = make(chan struct{})
	}
	p.mu.Unlock()
}

// Unblock releases the calls waiting since Block.
func (p *Publisher) Unblock() {
	p.mu.Lock()
	if p.blocked != nil {
		close(p.blocked)
		p.blocked = nil
	}
	p.mu.Unlock()
}

// Attempts counts Publish calls, failed ones included.
func (p *Publisher) Attempts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts
}

// Messages returns the messages published on topic ("" for all), in order.
func (p *Publisher) Messages(topic string) []Published {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Published
	for _, m := range p.msgs {
		if topic == "" || m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}
