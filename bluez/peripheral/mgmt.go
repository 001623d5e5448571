package peripheral

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Advertiser is how the lock advertises (Options.Advertiser).
type Advertiser int

// Advertisers.
const (
	// AdvertiseAuto registers the LEAdvertisement1 and, when bluetoothd
	// refuses it, advertises through the kernel's management interface.
	AdvertiseAuto Advertiser = iota
	// AdvertiseDBus uses LEAdvertisingManager1 only.
	AdvertiseDBus
	// AdvertiseMgmt uses the kernel's management interface only.
	AdvertiseMgmt
)

func (a Advertiser) String() string {
	switch a {
	case AdvertiseDBus:
		return "dbus"
	case AdvertiseMgmt:
		return "mgmt"
	}
	return "auto"
}

// Why a management-interface advertiser: the lock's advertising data
// (docs/protocol.md §1.1) is the 11-byte payload in ManufacturerData (15
// bytes of AD) in the advertisement and the 128-bit service UUID (18
// bytes) in the scan response, as the nRF52832 firmware sends it. BlueZ
// 5.66's LEAdvertisement1 has no scan-response properties (they came in a
// later release) and puts everything in the advertising data, which the
// kernel (6.1) caps at 31 bytes with the flags: it refuses the
// advertisement ("Advertising data too long"). The kernel's Add
// Advertising command (BlueZ doc/mgmt-api.txt) takes advertising data and
// scan response separately, so the lock advertises that way. It needs
// CAP_NET_ADMIN (the guest runs as root).

const (
	afBluetooth        = 31
	btprotoHCI         = 1
	hciChannelControl  = 3
	hciDevNone         = 0xffff
	mgmtOpAddAdv       = 0x003e
	mgmtOpRemoveAdv    = 0x003f
	mgmtEvCmdComplete  = 0x0001
	mgmtEvCmdStatus    = 0x0002
	mgmtAdvConnectable = 1 << 0
	mgmtAdvDiscov      = 1 << 1
	// mgmtInstance is the advertising instance the lock uses.
	mgmtInstance = 1
)

// errMgmt wraps a management command's failure status.
var errMgmt = errors.New("peripheral: management command failed")

// mgmtSocket is a socket on the kernel's Bluetooth management channel,
// for one controller.
type mgmtSocket struct {
	fd    int
	index uint16
}

// adapterIndex is N of "hciN".
func adapterIndex(name string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(name, "hci"), 10, 16)
	if err != nil || !strings.HasPrefix(name, "hci") {
		return 0, fmt.Errorf("%w: adapter %q is not hciN", ErrInvalidOptions, name)
	}
	return uint16(n), nil
}

func openMgmt(adapter string) (*mgmtSocket, error) {
	idx, err := adapterIndex(adapter)
	if err != nil {
		return nil, err
	}
	fd, err := syscall.Socket(afBluetooth, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, btprotoHCI)
	if err != nil {
		return nil, fmt.Errorf("peripheral: management socket: %w", err)
	}
	// struct sockaddr_hci { sa_family_t family; u16 dev; u16 channel; }
	var sa [6]byte
	binary.LittleEndian.PutUint16(sa[0:], afBluetooth)
	binary.LittleEndian.PutUint16(sa[2:], hciDevNone)
	binary.LittleEndian.PutUint16(sa[4:], hciChannelControl)
	if _, _, e := syscall.Syscall(syscall.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa))); e != 0 {
		_ = syscall.Close(fd)
		return nil, fmt.Errorf("peripheral: binding the management socket: %w", e)
	}
	return &mgmtSocket{fd: fd, index: idx}, nil
}

// command sends one command and waits up to timeout for its Command
// Complete or Command Status event.
func (m *mgmtSocket) command(op uint16, params []byte, timeout time.Duration) ([]byte, error) {
	pkt := make([]byte, 6, 6+len(params))
	binary.LittleEndian.PutUint16(pkt[0:], op)
	binary.LittleEndian.PutUint16(pkt[2:], m.index)
	binary.LittleEndian.PutUint16(pkt[4:], uint16(len(params)))
	pkt = append(pkt, params...)
	if _, err := syscall.Write(m.fd, pkt); err != nil {
		return nil, fmt.Errorf("peripheral: management command 0x%04x: %w", op, err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1024)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("peripheral: management command 0x%04x: no reply in %v", op, timeout)
		}
		tv := syscall.NsecToTimeval(left.Nanoseconds())
		if err := syscall.SetsockoptTimeval(m.fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
			return nil, err
		}
		n, err := syscall.Read(m.fd, buf)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
				continue
			}
			return nil, fmt.Errorf("peripheral: reading the management socket: %w", err)
		}
		if n < 9 {
			continue
		}
		ev := binary.LittleEndian.Uint16(buf[0:])
		idx := binary.LittleEndian.Uint16(buf[2:])
		if (ev != mgmtEvCmdComplete && ev != mgmtEvCmdStatus) || idx != m.index ||
			binary.LittleEndian.Uint16(buf[6:]) != op {
			continue // another client's reply, or an event
		}
		if st := buf[8]; st != 0 {
			return nil, fmt.Errorf("%w: command 0x%04x status 0x%02x", errMgmt, op, st)
		}
		return append([]byte(nil), buf[9:n]...), nil
	}
}

// advertise replaces the lock's advertising instance: connectable and
// general discoverable (the kernel adds the flags), with adv and scanRsp.
// Removing it first makes the controller enable advertising again, which
// is what makes btvirt send a report.
func (m *mgmtSocket) advertise(adv, scanRsp []byte, timeout time.Duration) error {
	if _, err := m.command(mgmtOpRemoveAdv, []byte{mgmtInstance}, timeout); err != nil && !errors.Is(err, errMgmt) {
		return err
	}
	p := make([]byte, 11, 11+len(adv)+len(scanRsp))
	p[0] = mgmtInstance
	binary.LittleEndian.PutUint32(p[1:], mgmtAdvConnectable|mgmtAdvDiscov)
	// duration and timeout 0: advertise until removed
	p[9], p[10] = byte(len(adv)), byte(len(scanRsp))
	p = append(append(p, adv...), scanRsp...)
	_, err := m.command(mgmtOpAddAdv, p, timeout)
	return err
}

func (m *mgmtSocket) stop(timeout time.Duration) error {
	_, err := m.command(mgmtOpRemoveAdv, []byte{mgmtInstance}, timeout)
	return err
}

func (m *mgmtSocket) Close() error { return syscall.Close(m.fd) }

// advertisingData is the lock's AD structures as the firmware sends them
// (docs/protocol.md §1.1): ManufacturerData (company ID little-endian,
// then the payload) in the advertisement, the complete list of 128-bit
// service UUIDs (one, little-endian) in the scan response.
func advertisingData(company uint16, payload []byte, serviceUUID string) (adv, scanRsp []byte, err error) {
	adv = append([]byte{byte(3 + len(payload)), 0xff, byte(company), byte(company >> 8)}, payload...)
	u, err := hex.DecodeString(strings.ReplaceAll(serviceUUID, "-", ""))
	if err != nil || len(u) != 16 {
		return nil, nil, fmt.Errorf("%w: service UUID %q", ErrInvalidOptions, serviceUUID)
	}
	scanRsp = []byte{17, 0x07}
	for i := 15; i >= 0; i-- {
		scanRsp = append(scanRsp, u[i])
	}
	return adv, scanRsp, nil
}
