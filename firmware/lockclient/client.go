// Package lockclient is the gateway's and the phone's side of the lock's
// command protocol: it sends requests over an open secure channel
// (firmware/channel) and pairs each with its result. fleet/ uses it, and a
// phone app could too. It may import the standard library and firmware/
// packages only.
package lockclient

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gatewayd/gatewayd/firmware/channel"
	"github.com/gatewayd/gatewayd/firmware/command"
	"github.com/gatewayd/gatewayd/firmware/frame"
)

// ErrMismatch is returned when the lock answers with a result whose
// request ID is not the one sent (the session is then unusable).
var ErrMismatch = errors.New("lockclient: result does not match the request")

// Client sends one request at a time over conn.
type Client struct {
	conn *channel.Conn
	mu   sync.Mutex
	next uint32
}

// New returns a client on an open channel.
func New(conn *channel.Conn) *Client { return &Client{conn: conn, next: 1} }

// Do sends req (its RequestID is assigned here) and returns the lock's
// result. A result whose status is not ok is returned with a nil error:
// the caller reads Status (and Result.Err). The lock's signature of the
// result (Result.Signature, docs/protocol.md §12.7.5) is returned as the
// lock sent it: the gateway relays it to the operator, who verifies it
// (command.VerifyResult); the gateway needs no trust in it.
func (c *Client) Do(ctx context.Context, req command.Request) (*command.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.RequestID = c.next
	c.next++
	b, err := command.MarshalRequest(&req)
	if err != nil {
		return nil, fmt.Errorf("lockclient: %w", err)
	}
	if err := c.conn.Send(ctx, frame.TypeRequest, b); err != nil {
		return nil, err
	}
	for {
		typ, pt, err := c.conn.Recv(ctx)
		if err != nil {
			return nil, err
		}
		if typ != frame.TypeResponse {
			continue // events are not requests' answers
		}
		res, err := command.ParseResult(req.Op, pt)
		if err != nil {
			return nil, fmt.Errorf("lockclient: %w", err)
		}
		if res.RequestID != req.RequestID {
			return nil, fmt.Errorf("%w: sent %d, got %d", ErrMismatch, req.RequestID, res.RequestID)
		}
		return res, nil
	}
}

// Signed sends a signed command for op.
func (c *Client) Signed(ctx context.Context, op command.Op, signed []byte) (*command.Result, error) {
	return c.Do(ctx, command.Request{Op: op, Signed: signed})
}

// Status asks for the lock's status.
func (c *Client) Status(ctx context.Context) (*command.Result, error) {
	return c.Do(ctx, command.Request{Op: command.OpStatus})
}

// AllowBond asks the lock to open a bond window for this session's peer;
// the passkey is in the result's BondWindow data.
func (c *Client) AllowBond(ctx context.Context, window time.Duration) (*command.Result, error) {
	return c.Do(ctx, command.Request{Op: command.OpAllowBond, Args: command.Args{WindowSeconds: uint8(window / time.Second)}})
}

// ReadAudit reads up to max audit entries from fromSeq on.
func (c *Client) ReadAudit(ctx context.Context, fromSeq uint32, max uint8) (*command.Result, error) {
	return c.Do(ctx, command.Request{Op: command.OpReadAudit, Args: command.Args{FromSeq: fromSeq, Max: max}})
}

// ListUsers asks for the user table (an admin's session, or signed).
func (c *Client) ListUsers(ctx context.Context) (*command.Result, error) {
	return c.Do(ctx, command.Request{Op: command.OpListUsers})
}
