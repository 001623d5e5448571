package lockclient

import (
	"context"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// SetRevocations delivers a fleet revocation list (cred.IssueRevocations)
// to the lock. Any authenticated peer may: the list carries the fleet
// root's signature, which the lock checks (docs/protocol.md §13.9).
func (c *Client) SetRevocations(ctx context.Context, list []byte) (*command.Result, error) {
	return c.Do(ctx, command.Request{Op: command.OpSetRevocations, Args: command.Args{Revocations: list}})
}
