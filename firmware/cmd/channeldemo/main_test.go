package main

import (
	"context"
	"testing"
	"time"
)

// TestDemo runs the demo at the smallest and largest MTU, so that the
// README's main command cannot rot: run fails if the channel does not open
// or if any attack is not refused for the expected reason.
func TestDemo(t *testing.T) {
	for _, mtu := range []int{23, 247} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := run(ctx, mtu); err != nil {
			t.Fatalf("mtu %d: %v", mtu, err)
		}
		cancel()
	}
}
