package dfu

import (
	"fmt"
	"slices"

	"github.com/gatewayd/gatewayd/firmware/dfu/dfupb"
)

// Device is what a lock's bootloader knows of the lock: its hardware
// version, its SoftDevice and the versions it runs.
type Device struct {
	// HWVersion is the lock's hardware version (the bootloader's
	// NRF_DFU_HW_VERSION); init packets must name exactly this one.
	HWVersion uint32 `json:"hw_version"`
	// SoftDeviceFWID is the FWID of the lock's SoftDevice (for example
	// 0x0101 for S132 7.2.0); sd_req must name it. Locks talk BLE, so they
	// always have one. (Package.Verify uses 0xFFFFFFFF, no FWID, for "the
	// SoftDevice an earlier image of the package installs".)
	SoftDeviceFWID uint32 `json:"softdevice_fwid"`
	// AppVersion and BootloaderVersion are the versions the lock runs.
	AppVersion        uint32 `json:"app_version"`
	BootloaderVersion uint32 `json:"bootloader_version"`
}

// sdReqAppOverwritesSD is sd_req's 0x00: "the application replaces the
// SoftDevice", which a BLE bootloader refuses.
const sdReqAppOverwritesSD = 0

// CheckInit is the bootloader's check of an init command against the lock
// (the nRF5 SDK's nrf_dfu_ver_validation_check, built with downgrade
// prevention, without NRF_DFU_DEBUG, for a BLE bootloader), in its order:
// firmware type, hash type, hw_version, sd_req, fw_version; then that the
// init command gives the image's size. The error wraps [ErrInitCommand],
// [ErrHashType], [ErrHWVersion], [ErrSoftDevice] or [ErrDowngrade]
// ([ExtErrorOf] gives the bootloader's extended error code). allowDowngrade
// skips the fw_version comparison (not the presence of fw_version).
//
// It returns the image's size as the init command declares it.
func CheckInit(init *dfupb.InitCommand, dev Device, allowDowngrade bool) (uint32, error) {
	if init == nil || init.Type == nil {
		return 0, fmt.Errorf("%w: no firmware type", ErrInitCommand)
	}
	typ := init.GetType()
	switch typ {
	case dfupb.FwType_APPLICATION, dfupb.FwType_SOFTDEVICE, dfupb.FwType_BOOTLOADER, dfupb.FwType_SOFTDEVICE_BOOTLOADER:
	default:
		return 0, fmt.Errorf("%w: firmware type %s is not taken by the lock's bootloader", ErrInitCommand, typ)
	}
	if init.GetHash().GetHashType() != dfupb.HashType_SHA256 {
		return 0, fmt.Errorf("%w: %s", ErrHashType, init.GetHash().GetHashType())
	}
	if len(init.GetHash().GetHash()) != 32 {
		return 0, fmt.Errorf("%w: SHA-256 hash of %d bytes", ErrInitCommand, len(init.GetHash().GetHash()))
	}
	if init.HwVersion == nil {
		return 0, fmt.Errorf("%w: no hw_version", ErrInitCommand)
	}
	if init.GetHwVersion() != dev.HWVersion {
		return 0, fmt.Errorf("%w: package for hardware %d, lock is %d", ErrHWVersion, init.GetHwVersion(), dev.HWVersion)
	}
	sdReq := init.GetSdReq()
	switch {
	case len(sdReq) == 0:
		return 0, fmt.Errorf("%w: no sd_req", ErrSoftDevice)
	case sdReq[0] == sdReqAppOverwritesSD:
		return 0, fmt.Errorf("%w: sd_req 0x00 (replace the SoftDevice) is refused by a BLE bootloader", ErrSoftDevice)
	case dev.SoftDeviceFWID != sdAfterUpdate && !slices.Contains(sdReq, dev.SoftDeviceFWID):
		return 0, fmt.Errorf("%w: sd_req %#x does not name the lock's SoftDevice %#x", ErrSoftDevice, sdReq, dev.SoftDeviceFWID)
	}
	if init.FwVersion == nil {
		if typ != dfupb.FwType_SOFTDEVICE {
			return 0, fmt.Errorf("%w: no fw_version", ErrInitCommand)
		}
	} else if !allowDowngrade {
		v := init.GetFwVersion()
		switch typ {
		case dfupb.FwType_APPLICATION, dfupb.FwType_SOFTDEVICE:
			if v < dev.AppVersion {
				return 0, fmt.Errorf("%w: version %d below the lock's %d", ErrDowngrade, v, dev.AppVersion)
			}
		default:
			if v <= dev.BootloaderVersion {
				return 0, fmt.Errorf("%w: bootloader version %d not above the lock's %d", ErrDowngrade, v, dev.BootloaderVersion)
			}
		}
	}
	var size uint32
	switch typ {
	case dfupb.FwType_APPLICATION:
		size = init.GetAppSize()
	case dfupb.FwType_SOFTDEVICE:
		size = init.GetSdSize()
	case dfupb.FwType_BOOTLOADER:
		size = init.GetBlSize()
	case dfupb.FwType_SOFTDEVICE_BOOTLOADER:
		if init.GetSdSize() == 0 || init.GetBlSize() == 0 {
			return 0, fmt.Errorf("%w: SoftDevice and bootloader need sd_size and bl_size", ErrInitCommand)
		}
		size = init.GetSdSize() + init.GetBlSize()
		if size < init.GetSdSize() {
			return 0, fmt.Errorf("%w: sd_size + bl_size overflows", ErrInitCommand)
		}
	}
	if size == 0 {
		return 0, fmt.Errorf("%w: no image size for %s", ErrInitCommand, typ)
	}
	return size, nil
}
