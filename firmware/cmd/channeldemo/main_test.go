package main

import (
	"context"
	"testing"
	"time"
)

// TestDemo runs the demo at the smallest and largest MTU, so that the
// README's main command cannot rot: run fails if the channel does not open
// or if any attack is not refused for the expected reason; and it shows
// as many steps as Steps says.
func TestDemo(t *testing.T) {
	for _, mtu := range []int{23, 247} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := run(ctx, mtu); err != nil {
			t.Fatalf("mtu %d: %v", mtu, err)
		}
		if next-first != Steps {
			t.Errorf("mtu %d: %d steps shown, Steps says %d (scripts/demo.sh numbers the next part from it)", mtu, next-first, Steps)
		}
		cancel()
	}
}
