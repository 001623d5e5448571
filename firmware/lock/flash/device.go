package flash

import (
	"fmt"
	"math/rand/v2"
	"os"
)

// OpKind is the kind of a device operation.
type OpKind uint8

// Device operation kinds.
const (
	OpWrite OpKind = iota + 1 // program a run of erased words
	OpErase                   // erase one page to 0xFF
)

func (k OpKind) String() string {
	switch k {
	case OpWrite:
		return "write"
	case OpErase:
		return "erase"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Step says why the store performs a device operation; it lets a test aim
// power cuts at one phase of the protocol (doc.go).
type Step uint8

// Steps of the store's protocol, in the order a garbage collection runs
// them (a Put is StepRecord alone).
const (
	StepRecord      Step = iota + 1 // append one record (Put or Delete)
	StepEraseSpare                  // erase a page that holds leftovers, before reuse
	StepFormat                      // write a page header (fresh page or GC target)
	StepCopy                        // GC: copy one live record to the new page
	StepCommit                      // write a page's commit word
	StepEraseVictim                 // GC: erase the page that was collected
	StepMarkErased                  // GC: write the new page's src_erased word
)

var stepNames = [...]string{"", "record", "erase-spare", "format", "copy", "commit", "erase-victim", "mark-erased"}

func (s Step) String() string {
	if int(s) < len(stepNames) && s != 0 {
		return stepNames[s]
	}
	return fmt.Sprintf("Step(%d)", uint8(s))
}

// Op describes one device operation, as the fault seam sees it.
type Op struct {
	// Index counts the device operations since Open, from 0.
	Index  int
	Kind   OpKind
	Step   Step
	Page   int // the page written or erased
	Offset int // byte offset in the page (0 for an erase)
	Len    int // bytes written (the page size for an erase)
}

func (o Op) String() string {
	return fmt.Sprintf("op %d: %s %s page %d offset %d len %d", o.Index, o.Step, o.Kind, o.Page, o.Offset, o.Len)
}

// Faults is the power-cut seam. The zero value injects nothing.
type Faults struct {
	// Cut is consulted before every device operation. When it returns
	// true, the power fails during that operation: a write reaches the
	// flash only partly (a random prefix of its words, and possibly one
	// more word half-programmed), an erase is left half done (a random
	// part of the page is 0xFF, or every word has only some bits erased).
	// The torn result is written to the image, and the store then fails
	// every call with ErrPowerCut, as a dead chip would. Reopening the
	// image is the reboot.
	Cut func(op Op) bool
	// Seed seeds the generator that decides how much of a torn
	// operation reaches the flash, so that every cut is reproducible.
	Seed uint64
}

// CutAt returns a Faults.Cut that cuts the power during device operation
// number index (0-based, counted from Open).
func CutAt(index int) func(Op) bool {
	return func(op Op) bool { return op.Index == index }
}

// device is the flash model: an image of pages, erased to 0xFF, programmed
// word by word, never programmed twice without an erase. buf is the
// flash's content; f, when not nil, is the file that holds it.
type device struct {
	buf      []byte
	f        *os.File
	pageSize int
	pages    int
	faults   Faults
	rng      *rand.Rand
	ops      int
	dead     error // sticky: set by a power cut or an I/O error
}

func newDevice(buf []byte, f *os.File, pageSize int, faults Faults) *device {
	return &device{
		buf:      buf,
		f:        f,
		pageSize: pageSize,
		pages:    len(buf) / pageSize,
		faults:   faults,
		rng:      rand.New(rand.NewPCG(faults.Seed, 0x9e3779b97f4a7c15)),
	}
}

func (d *device) page(p int) []byte { return d.buf[p*d.pageSize : (p+1)*d.pageSize] }

// cut consults the fault seam for op; it counts every operation.
func (d *device) cut(op Op) bool {
	op.Index = d.ops
	d.ops++
	return d.faults.Cut != nil && d.faults.Cut(op)
}

// write programs data (whole words) at byte offset off of page p.
func (d *device) write(p, off int, data []byte, step Step) error {
	if d.dead != nil {
		return d.dead
	}
	if off%WordSize != 0 || len(data)%WordSize != 0 || off < 0 || off+len(data) > d.pageSize {
		return fmt.Errorf("%w: write of %d bytes at page %d offset %d is not word-aligned or leaves the page", ErrProgram, len(data), p, off)
	}
	at := p*d.pageSize + off
	if !allErased(d.buf[at : at+len(data)]) {
		return fmt.Errorf("%w: page %d offset %d..%d is not erased", ErrProgram, p, off, off+len(data))
	}
	if d.cut(Op{Kind: OpWrite, Step: step, Page: p, Offset: off, Len: len(data)}) {
		words := len(data) / WordSize
		k := d.rng.IntN(words + 1) // words fully programmed
		copy(d.buf[at:], data[:k*WordSize])
		if k < words {
			// The word in progress: only some of its 0 bits made it.
			for i := range WordSize {
				mask := byte(d.rng.Uint32())
				d.buf[at+k*WordSize+i] = data[k*WordSize+i] | mask
			}
		}
		return d.die(at, len(data))
	}
	copy(d.buf[at:], data)
	return d.persist(at, len(data))
}

// erase sets page p to 0xFF.
func (d *device) erase(p int, step Step) error {
	if d.dead != nil {
		return d.dead
	}
	at := p * d.pageSize
	pg := d.buf[at : at+d.pageSize]
	if d.cut(Op{Kind: OpErase, Step: step, Page: p, Len: d.pageSize}) {
		words := d.pageSize / WordSize
		switch d.rng.IntN(3) {
		case 0: // erased from the start up to a random word
			n := d.rng.IntN(words + 1)
			for i := range n * WordSize {
				pg[i] = 0xFF
			}
		case 1: // a random subset of the words erased
			for w := range words {
				if d.rng.IntN(2) == 0 {
					for i := range WordSize {
						pg[w*WordSize+i] = 0xFF
					}
				}
			}
		default: // every cell part-way: some bits of each byte erased
			for i := range pg {
				pg[i] |= byte(d.rng.Uint32())
			}
		}
		return d.die(at, d.pageSize)
	}
	for i := range pg {
		pg[i] = 0xFF
	}
	return d.persist(at, d.pageSize)
}

// die writes the torn bytes out and kills the device.
func (d *device) die(at, n int) error {
	if err := d.persist(at, n); err != nil {
		return err
	}
	if err := d.sync(); err != nil {
		return err
	}
	d.dead = ErrPowerCut
	return ErrPowerCut
}

func (d *device) persist(at, n int) error {
	if d.f == nil {
		return nil
	}
	if _, err := d.f.WriteAt(d.buf[at:at+n], int64(at)); err != nil {
		d.dead = fmt.Errorf("flash: write image: %w", err)
		return d.dead
	}
	return nil
}

// sync makes every write so far durable in the file.
func (d *device) sync() error {
	if d.dead != nil && d.dead != ErrPowerCut {
		return d.dead
	}
	if d.f == nil {
		return nil
	}
	if err := d.f.Sync(); err != nil {
		d.dead = fmt.Errorf("flash: sync image: %w", err)
		return d.dead
	}
	return nil
}
