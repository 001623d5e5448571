package lockclient

import (
	"context"

	"github.com/gatewayd/gatewayd/firmware/command"
)

// EnterDFU sends an admin-signed enter-dfu command (command.OpEnterDFU,
// whose args name the init packet's SHA-256). On ok the lock resets into
// its bootloader once the result is sent, which ends this session: the
// DFU controller then connects to the bootloader (its address is the
// lock's plus one, docs/dfu.md). On not_ready the bike is in use or the
// battery is low, and nothing happened but the command's counter.
func (c *Client) EnterDFU(ctx context.Context, signed []byte) (*command.Result, error) {
	return c.Signed(ctx, command.OpEnterDFU, signed)
}
