package dfutest

import "time"

// LinkModel is a coarse model of a BLE connection's timing, so a transfer
// over an in-process link has a modelled duration to compare with a bound.
// Per connection event (every Interval) the link carries PacketsPerEvent
// ATT PDUs; a Control Point request waits for its response until the next
// event, and so does the controller after each receipt notification.
type LinkModel struct {
	Interval        time.Duration
	PacketsPerEvent int
}

// Model1M returns the model for a 1M PHY connection at the given ATT MTU
// with a 15 ms connection interval: each PDU of ATT_MTU bytes (plus 17
// bytes of L2CAP, link layer and radio overhead) at 8 µs per byte, and
// 380 µs of inter-frame spaces and the peer's empty acknowledgement.
func Model1M(attMTU int) LinkModel {
	const interval = 15 * time.Millisecond
	pdu := time.Duration(attMTU+17)*8*time.Microsecond + 380*time.Microsecond
	return LinkModel{Interval: interval, PacketsPerEvent: max(1, int(interval/pdu))}
}

// Bound is the shortest time n bytes can take in ATT_MTU-3 Packet writes
// on this model: full events of writes, no round trips.
func (m LinkModel) Bound(n, attMTU int) time.Duration {
	writes := (n + attMTU - 4) / (attMTU - 3)
	events := (writes + m.PacketsPerEvent - 1) / m.PacketsPerEvent
	return time.Duration(events) * m.Interval
}

// clock is a link's modelled time.
type clock struct {
	m    LinkModel
	now  time.Duration
	used int // PDUs sent in the current event
}

// send accounts one PDU from the central.
func (c *clock) send() {
	if c.m.PacketsPerEvent == 0 {
		return
	}
	if c.used == c.m.PacketsPerEvent {
		c.now += c.m.Interval
		c.used = 0
	}
	c.used++
}

// roundTrip waits for the peripheral's answer: the next event.
func (c *clock) roundTrip() {
	if c.m.PacketsPerEvent == 0 {
		return
	}
	c.now += c.m.Interval
	c.used = 0
}
