package flash

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// these (or, for the file itself, the operating system's error); match them
// with errors.Is.
var (
	// ErrPowerCut is returned by the device operation during which the
	// fault seam (Options.Faults) cut the power, and from then on by every
	// method of that File: the chip is dead until the image is opened
	// again.
	ErrPowerCut = errors.New("flash: power cut")
	// ErrCorrupt is returned by Open when the image holds something the
	// store's protocol cannot produce and cannot safely discard: a page
	// that holds valid records Open would otherwise have to drop, two
	// different records with the same key and sequence number, or a page
	// header that contradicts another. The message names the page (and
	// the offset, for a record). Open never drops a valid record silently.
	ErrCorrupt = errors.New("flash: corrupt image")
	// ErrGeometry is returned by Open when the image file's size, or the
	// geometry written in a page header, differs from Options.PageSize and
	// Options.Pages.
	ErrGeometry = errors.New("flash: image geometry differs from options")
	// ErrBadOptions is returned by Open when PageSize is not a power of two
	// in 256..32768 or Pages is not in 2..255.
	ErrBadOptions = errors.New("flash: bad options")
	// ErrBadKey is returned by Put, Get and Delete for the reserved key
	// 0xFFFF (the erased pattern).
	ErrBadKey = errors.New("flash: reserved record key")
	// ErrTooLarge is returned by Put when the value is longer than one
	// page can hold: PageSize - 44 bytes (MaxData, 4052, for the default
	// page size and for Mem).
	ErrTooLarge = errors.New("flash: value too large")
	// ErrFull is returned by Put and Delete when the record does not fit
	// even after garbage collection: the live records fill the store. The
	// store is unchanged and still usable.
	ErrFull = errors.New("flash: store full")
	// ErrExhausted is returned by Put and Delete when the record sequence
	// number or the page generation would reach 0xFFFFFFFF (about four
	// billion writes: beyond the flash's endurance).
	ErrExhausted = errors.New("flash: sequence numbers exhausted")
	// ErrProgram is returned when the store would program a word that is
	// not erased, or write outside a page: the image was changed behind
	// the store's back, or the store has a bug. The File fails from then on.
	ErrProgram = errors.New("flash: program of a non-erased word")
	// ErrClosed is returned by every method of a File after Close.
	ErrClosed = errors.New("flash: store closed")
)
