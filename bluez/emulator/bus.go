package emulator

import (
	"context"

	"github.com/gatewayd/gatewayd/bluez/internal/dbustest"
)

// Bus is a private dbus-daemon of the system type (BlueZ's bus), with its
// own configuration and its socket in a directory of the caller's: what
// the emulator owns org.bluez on outside a test (the demo, cmd/bluezemu).
// Its Addr is what DBUS_SYSTEM_BUS_ADDRESS would hold; Close stops it.
type Bus = dbustest.Bus

// StartBus starts a private bus in dir, which must exist. It fails, naming
// the package to install, when dbus-daemon is missing.
func StartBus(ctx context.Context, dir string) (*Bus, error) {
	return dbustest.StartDaemon(ctx, dir)
}
