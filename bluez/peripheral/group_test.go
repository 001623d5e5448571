package peripheral

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

// TestGroupRoutesByAdapter: the default agent of a group hands a request
// to the peripheral of the adapter the device is on, and a request for an
// adapter without a peripheral (or a nil group) stays with the caller.
func TestGroupRoutesByAdapter(t *testing.T) {
	var g Group
	p1 := &Peripheral{adapter: "/org/bluez/hci1"}
	p2 := &Peripheral{adapter: "/org/bluez/hci2"}
	g.add(p1)
	g.add(p2)
	if got := g.forDevice("/org/bluez/hci2/dev_00_AA_01_00_00_00", p1); got != p2 {
		t.Errorf("hci2's device went to %v", got.adapter)
	}
	if got := g.forDevice("/org/bluez/hci1/dev_00_AA_01_00_00_00", p2); got != p1 {
		t.Errorf("hci1's device went to %v", got.adapter)
	}
	if got := g.forDevice("/org/bluez/hci9/dev_00_AA_01_00_00_00", p2); got != p2 {
		t.Errorf("an unknown adapter's device went to %v", got.adapter)
	}
	g.remove(p2)
	if got := g.forDevice("/org/bluez/hci2/dev_00_AA_01_00_00_00", p1); got != p1 {
		t.Errorf("a removed peripheral still gets requests")
	}
	var none *Group
	if got := none.forDevice(dbus.ObjectPath("/org/bluez/hci2/dev_x"), p1); got != p1 {
		t.Errorf("nil group")
	}
}
