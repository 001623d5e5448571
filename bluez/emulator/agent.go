package emulator

import (
	"context"
	"errors"
	"time"

	"github.com/godbus/dbus/v5"
)

// agentRef is a registered Agent1 object.
type agentRef struct {
	owner string
	path  dbus.ObjectPath
	cap   string
}

var capabilities = map[string]bool{"": true, "DisplayOnly": true, "DisplayYesNo": true,
	"KeyboardOnly": true, "NoInputNoOutput": true, "KeyboardDisplay": true}

type agentMgrHandler struct{ e *Emulator }

func (h agentMgrHandler) RegisterAgent(m dbus.Message, agent dbus.ObjectPath, capability string) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, derr := e.lookup(m, ifaceAgentMgr); derr != nil {
		return derr
	}
	if !capabilities[capability] || !agent.IsValid() {
		return invalidArgs()
	}
	s := msgSender(m)
	if _, ok := e.agents[s]; ok {
		return bluezErr("AlreadyExists", "Already Exists")
	}
	if capability == "" {
		capability = "KeyboardDisplay"
	}
	e.agents[s] = agentRef{owner: s, path: agent, cap: capability}
	return nil
}

func (h agentMgrHandler) UnregisterAgent(m dbus.Message, agent dbus.ObjectPath) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, derr := e.lookup(m, ifaceAgentMgr); derr != nil {
		return derr
	}
	s := msgSender(m)
	if a, ok := e.agents[s]; !ok || a.path != agent {
		return bluezErr("DoesNotExist", "Does Not Exist")
	}
	e.dropAgentLocked(s)
	return nil
}

func (h agentMgrHandler) RequestDefaultAgent(m dbus.Message, agent dbus.ObjectPath) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, derr := e.lookup(m, ifaceAgentMgr); derr != nil {
		return derr
	}
	s := msgSender(m)
	if a, ok := e.agents[s]; !ok || a.path != agent {
		return bluezErr("DoesNotExist", "Does Not Exist")
	}
	e.defAgent = s
	return nil
}

func (e *Emulator) dropAgentLocked(owner string) {
	delete(e.agents, owner)
	if e.defAgent == owner {
		e.defAgent = ""
	}
}

// agentLocked is the agent BlueZ would ask: the default one, else any.
func (e *Emulator) agentLocked(caller string) (agentRef, bool) {
	if a, ok := e.agents[caller]; ok {
		return a, true
	}
	if a, ok := e.agents[e.defAgent]; ok {
		return a, true
	}
	return agentRef{}, false
}

// Pair runs LE Secure Connections passkey entry: it asks the agent for the
// passkey the lock displays (Agent1.RequestPasskey) and gives it to the
// lock's Pair.
func (h deviceHandler) Pair(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	d, derr := e.deviceAt(m)
	if derr != nil {
		e.mu.Unlock()
		return derr
	}
	switch {
	case e.bonds[d.addr]:
		derr = bluezErr("AlreadyExists", "Already Exists")
	case e.pairing[d.addr] != nil:
		derr = bluezErr("InProgress", "In Progress")
	case d.conn == nil:
		// BlueZ connects first; the emulator wants the link up already.
		derr = bluezErr("ConnectionAttemptFailed", "Page Timeout")
	}
	a, ok := e.agentLocked(msgSender(m))
	if derr == nil && !ok {
		derr = bluezErr("AuthenticationRejected", "Authentication Rejected")
	}
	if derr != nil {
		e.mu.Unlock()
		return derr
	}
	if a.cap == "DisplayOnly" || a.cap == "NoInputNoOutput" || e.pairFailLocked(d.addr) {
		// SMP ran and failed (no passkey entry possible, or an injected
		// Pairing Failed).
		e.pairFailedLocked(d)
		e.mu.Unlock()
		return bluezErr("AuthenticationFailed", "Authentication Failed")
	}
	if d.conn.d.h == nil || d.conn.d.h.l == nil {
		// The unbonded bootloader takes no pairing.
		e.pairFailedLocked(d)
		e.mu.Unlock()
		return bluezErr("AuthenticationFailed", "Authentication Failed")
	}
	ctx, cancel := e.callCtx()
	defer cancel()
	e.pairing[d.addr] = cancel
	l := d.conn.d.h.l
	path := d.path
	e.mu.Unlock()

	var passkey uint32
	err := e.conn.Object(a.owner, a.path).CallWithContext(ctx, ifaceAgent+".RequestPasskey", 0, path).Store(&passkey)

	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.pairing, d.addr)
	switch {
	case e.gone || e.devices[d.addr] != d:
		// The device was removed meanwhile (RemoveAdapter): src/device.c
		// device_remove cancels the bonding with MGMT_STATUS_CONNECT_FAILED.
		e.cancelAgent(a, path)
		return bluezErr("ConnectionAttemptFailed", "Page Timeout")
	case errors.Is(ctx.Err(), context.Canceled):
		e.cancelAgent(a, path)
		e.pairFailedLocked(d)
		return bluezErr("AuthenticationCanceled", "Authentication Canceled")
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		e.cancelAgent(a, path)
		e.pairFailedLocked(d)
		return bluezErr("AuthenticationTimeout", "Authentication Timeout")
	case err != nil:
		e.pairFailedLocked(d)
		return bluezErr("AuthenticationCanceled", "Authentication Canceled")
	}
	if err := l.Pair(e.opts.AdapterAddress, passkey); err != nil {
		e.log.Debug("pairing refused by the lock", "device", d.addr, "err", err)
		e.pairFailedLocked(d)
		return bluezErr("AuthenticationFailed", "Authentication Failed")
	}
	e.bonds[d.addr] = true
	e.stored[d.addr] = d.h
	e.setProps(d.path, ifaceDevice, map[string]dbus.Variant{"Paired": v(true), "Bonded": v(true)})
	return nil
}

// pairFailedLocked is what a failed SMP pairing leaves behind on BlueZ
// 5.66 with the Linux kernel, as the real-BlueZ tier shows
// (bluez/internal/realbluez TestDifferential: link_dropped,
// stored_device): the kernel sends Pairing Failed and drops the link
// (ServicesResolved false, Connected false); bluetoothd makes the device
// temporary again, so it is not stored (a restart does not load it) and
// goes AwayTimeout after its last advertisement once out of range; and
// bluetoothd resumes the discovery it paused for the pairing
// (src/adapter.c bonding_complete → resume_discovery), which holds the
// next LE connection attempt on this adapter for Options.PairFailureStall.
// A device still bonded from before keeps its bond and stays stored.
func (e *Emulator) pairFailedLocked(d *device) {
	if e.devices[d.addr] != d {
		return
	}
	if d.conn != nil {
		e.disconnectLocked(d)
	}
	if !e.bonds[d.addr] {
		delete(e.stored, d.addr)
	}
	if e.opts.PairFailureStall > 0 {
		e.stallUntil = time.Now().Add(e.opts.PairFailureStall)
	}
}

// cancelAgent tells the agent its request is void (Agent1.Cancel), in a
// goroutine the emulator owns, with a deadline.
func (e *Emulator) cancelAgent(a agentRef, dev dbus.ObjectPath) {
	if e.closed {
		return
	}
	e.wg.Go(func() {
		ctx, cancel := e.callCtx()
		defer cancel()
		if err := e.conn.Object(a.owner, a.path).CallWithContext(ctx, ifaceAgent+".Cancel", 0).Err; err != nil {
			e.log.Debug("Agent1.Cancel failed", "agent", a.path, "device", dev, "err", err)
		}
	})
}

func (h deviceHandler) CancelPairing(m dbus.Message) *dbus.Error {
	e := h.e
	e.mu.Lock()
	defer e.mu.Unlock()
	d, derr := e.deviceAt(m)
	if derr != nil {
		return derr
	}
	c, ok := e.pairing[d.addr]
	if !ok {
		return bluezErr("DoesNotExist", "Does Not Exist")
	}
	c()
	return nil
}
