package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"k8s.io/utils/clock"
)

// The ring's defaults.
const (
	// DefaultFlushInterval bounds how long written packets may sit in the ring's buffer
	// before they are visible in the file. It dominated annotation → first packet on disk
	// (make bench: p50 133 ms at 100 ms); a quiet capture flushes at most 50 times a second,
	// a busy one fills the buffer first.
	DefaultFlushInterval = 20 * time.Millisecond
	// DefaultRingBufferSize is the write buffer of a ring: one write syscall per 64 KiB
	// under load (packets larger than the buffer are written directly).
	DefaultRingBufferSize = 64 << 10
	// DefaultRingFilePerm is the mode ring files are created with (before the umask).
	DefaultRingFilePerm fs.FileMode = 0o600
)

// pcap file format constants: microsecond timestamps, version 2.4, little endian, as
// tcpdump writes them on the machines we run on.
const (
	pcapMagicMicro      = 0xa1b2c3d4
	pcapVersionMajor    = 2
	pcapVersionMinor    = 4
	pcapFileHeaderLen   = 24
	pcapRecordHeaderLen = 16
)

// Errors returned by the Ring.
var (
	ErrRingClosed = errors.New("ring is closed")
	ErrNoFormat   = errors.New("ring has no stream format yet (SetFormat)")
)

// RingOptions configure a Ring. Dir and Base are given by the caller; the Ring builds no
// path from anything else.
type RingOptions struct {
	Dir           string        // existing directory the files are written in
	Base          string        // file name without index, e.g. "capture-ns_pod.pcap"; no '/'
	Files         int           // ring size N (tcpdump -W), at least 1
	FileSize      int64         // rotate once a file exceeds this; 0 means DefaultFileSize
	Start         int           // index of the first file written; tcpdump starts at 0
	FlushInterval time.Duration // 0 means DefaultFlushInterval
	BufferSize    int           // 0 means DefaultRingBufferSize
	Perm          fs.FileMode   // 0 means DefaultRingFilePerm
	// Clock runs the flush timer; nil means the real clock. Tests step a fake one.
	Clock clock.WithDelayedExecution
	// Format is the files' format: FormatPcap ("" too), tcpdump's byte for byte, or
	// FormatPcapng, each file a complete pcapng file whose section header carries Section.
	Format  string
	Section SectionInfo // pcapng only; bounded by the ring (see SectionInfo)
	// BeforeCreate, when set, is called before each file of the ring is created (the first
	// one, and at every rotation); an error it returns fails the write like a full disk
	// would. The capture manager checks the file system's free space here.
	BeforeCreate func() error
}

// FileError is a failure to write a ring's files: a full disk, an I/O error, a permission,
// or BeforeCreate's refusal. The capture's storage failed, not its packet source.
type FileError struct {
	Op   string // "write", "create", "remove", "close"
	File string // the ring file's name
	Err  error
}

func (e *FileError) Error() string { return e.Op + " ring file " + e.File + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// ErrLowDiskSpace is what BeforeCreate returns (wrapped) when the file system's free space is
// under the agent's floor.
var ErrLowDiskSpace = errors.New("free disk space under the floor")

// RingCounts are a ring's running totals.
type RingCounts struct {
	Packets   uint64 // packet records written
	Bytes     uint64 // captured bytes of those packets (record data, no pcap headers)
	FileBytes uint64 // bytes written to the files: global and record headers included
	Rotations uint64 // rotations to a next file (the first file and a header rewritten in place are not)
}

// Ring writes a pcap stream to N files with tcpdump's `-C <size> -W N -w <base>` semantics
// and names, byte for byte (or, with FormatPcapng, the same ring of pcapng files): before a packet is written, if the current file is already
// larger than FileSize the next file is started (so a file passes the limit by at most one
// packet); after N files the oldest is replaced. Unlike tcpdump, a file is replaced by
// unlinking it and creating a new one, never by truncating it in place: ext4's
// auto_da_alloc forces truncated files to disk, which costs a fast capture most of its
// packets.
//
// Writes are buffered. A timer started by the first write into an empty buffer flushes it
// FlushInterval later, so data is visible in the file within about that time while a busy
// ring makes one write syscall per buffer, not per packet.
//
// A Ring is safe for concurrent use.
type Ring struct {
	root     *os.Root // the caller's directory; file operations never leave it
	dir      string
	base     string
	files    int
	fileSize int64
	interval time.Duration
	perm     fs.FileMode
	clock    clock.WithDelayedExecution
	check    func() error
	ng       bool        // FormatPcapng
	section  SectionInfo // bounded; pcapng only

	// Running totals, read without mu by Counts and DiskBytes.
	packets, bytes, fileBytes, rotations atomic.Uint64
	onDisk                               atomic.Int64 // sum of sizes, buffered bytes included

	// mu protects the fields below. The flush timer's callback takes it too.
	mu        sync.Mutex
	f         *os.File // current file; nil before the first SetFormat or after a failed open
	bw        *bufio.Writer
	index     int   // index of the current file, or of the next one to create when pending
	pending   bool  // file index is still to be created (before SetFormat, after a failed open)
	size      int64 // logical size of the current file, buffered bytes included (tcpdump's ftell)
	filePkts  int   // packets in the current file
	linkType  layers.LinkType
	snaplen   uint32
	hasFormat bool
	sizes     []int64 // logical size of each file index (0: none); sizes[index] == size
	timer     clock.Timer
	armed     bool  // timer is pending
	err       error // first write error; the ring refuses further writes (sticky, like bufio)
	closed    bool
	hdr       [ngEPBHeadLen]byte // a record's header (the larger of the two formats')
	tail      [7]byte            // an EPB's padding and trailing length
}

// NewRing validates o and returns a ring. No file is touched until SetFormat.
func NewRing(o RingOptions) (*Ring, error) {
	if o.Files < 1 {
		return nil, fmt.Errorf("ring files %d: must be at least 1", o.Files)
	}
	if err := ValidateRingBase(o.Base, o.Files); err != nil {
		return nil, err
	}
	if o.FileSize == 0 {
		o.FileSize = DefaultFileSize
	}
	if o.FileSize < 0 {
		return nil, fmt.Errorf("ring file size %d: must be positive", o.FileSize)
	}
	if o.Start < 0 || o.Start >= o.Files {
		return nil, fmt.Errorf("ring start %d: must be in [0, %d)", o.Start, o.Files)
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultRingBufferSize
	}
	if o.Perm == 0 {
		o.Perm = DefaultRingFilePerm
	}
	if o.Perm&^0o666 != 0 {
		return nil, fmt.Errorf("ring file mode %v: only read/write bits allowed", o.Perm)
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Format != "" && o.Format != FormatPcap && o.Format != FormatPcapng {
		return nil, fmt.Errorf("ring format %q: must be %q or %q", o.Format, FormatPcap, FormatPcapng)
	}
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("open ring directory: %w", err)
	}
	r := &Ring{
		root:     root,
		dir:      o.Dir,
		base:     o.Base,
		files:    o.Files,
		fileSize: o.FileSize,
		interval: o.FlushInterval,
		perm:     o.Perm,
		clock:    o.Clock,
		check:    o.BeforeCreate,
		ng:       o.Format == FormatPcapng,
		section:  o.Section.bounded(),
		bw:       bufio.NewWriterSize(nil, o.BufferSize),
		index:    o.Start,
		pending:  true,
		sizes:    make([]int64, o.Files),
	}
	// files an earlier capture left under the ring's names count until they are replaced
	for i := range r.sizes {
		if fi, err := root.Lstat(RingFileName(r.base, r.files, i)); err == nil && fi.Mode().IsRegular() {
			r.sizes[i] = fi.Size()
			r.onDisk.Add(fi.Size())
		}
	}
	return r, nil
}

// OpenRing is NewRing with the defaults for everything but the ring's place and size
// (fileSize 0 means DefaultFileSize).
func OpenRing(dir, base string, files int, fileSize int64) (*Ring, error) {
	return NewRing(RingOptions{Dir: dir, Base: base, Files: files, FileSize: fileSize})
}

// Dir returns the ring's directory.
func (r *Ring) Dir() string { return r.dir }

// Files returns the paths of the ring's files that exist, oldest first, which is the order
// the ring overwrites them in: those after the current file in ring order (from an earlier
// lap, or left by an earlier capture with the same name), then the current file last.
func (r *Ring) Files() []string {
	r.mu.Lock()
	cur := r.index
	if r.pending {
		cur = (r.index - 1 + r.files) % r.files
	}
	r.mu.Unlock()
	var out []string
	for i := 1; i <= r.files; i++ {
		p := filepath.Join(r.dir, RingFileName(r.base, r.files, (cur+i)%r.files))
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
		}
	}
	return out
}

// Counts returns the ring's running totals.
func (r *Ring) Counts() RingCounts {
	return RingCounts{Packets: r.packets.Load(), Bytes: r.bytes.Load(), FileBytes: r.fileBytes.Load(), Rotations: r.rotations.Load()}
}

// DiskBytes returns what the ring's files hold now, buffered bytes included: the sizes of
// the files of the ring's names, as written or as found when the ring was made.
func (r *Ring) DiskBytes() int64 { return r.onDisk.Load() }

// Pattern describes the ring's file names for people, in shell brace notation:
// "/dir/capture-pod.pcap{0..2}" (one file: its path).
func (r *Ring) Pattern() string {
	p := filepath.Join(r.dir, r.base)
	if r.files == 1 {
		return p
	}
	return fmt.Sprintf("%s{%s..%s}", p, strings.TrimPrefix(RingFileName(r.base, r.files, 0), r.base),
		strings.TrimPrefix(RingFileName(r.base, r.files, r.files-1), r.base))
}

// SetFormat sets the stream's link type and snaplen (its pcap global header); call it
// before the first packet and whenever the stream's source changes. The first call opens
// the first file. A format equal to the current file's continues that file; a different
// one starts the next file, or rewrites the current file if it holds no packet yet.
// After a write error (disk full, I/O error) the ring refuses packets until the next
// SetFormat, which leaves the failed file as it is (it may end in a partial record) and
// starts the next one: a capture restarted once the cause is gone writes again.
func (r *Ring) SetFormat(lt layers.LinkType, snaplen uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrRingClosed
	}
	if r.err != nil {
		if r.f != nil {
			_ = r.f.Close() // its buffered data could not be written; the error was reported
			r.f = nil
			r.bw.Reset(nil)
		}
		r.err = nil
		r.linkType, r.snaplen, r.hasFormat = lt, snaplen, true
		r.index = (r.index + 1) % r.files
		r.rotations.Add(1)
		return r.openLocked()
	}
	same := r.hasFormat && lt == r.linkType && snaplen == r.snaplen
	r.linkType, r.snaplen, r.hasFormat = lt, snaplen, true
	switch {
	case r.f == nil:
		return r.openLocked()
	case same:
		return nil
	case r.filePkts == 0:
		return r.reopenLocked(r.index)
	default:
		return r.rotateLocked()
	}
}

// WritePacket appends one packet record. data must be ci.CaptureLength bytes; it is not
// retained.
func (r *Ring) WritePacket(ci gopacket.CaptureInfo, data []byte) error {
	if ci.CaptureLength != len(data) {
		return fmt.Errorf("write packet: capture length %d, data length %d", ci.CaptureLength, len(data))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(); err != nil {
		return err
	}
	if !r.hasFormat {
		return ErrNoFormat
	}
	if r.f == nil { // a previous open failed: try again
		if err := r.openLocked(); err != nil {
			return err
		}
	}
	if r.size > r.fileSize {
		if err := r.rotateLocked(); err != nil {
			return err
		}
	}
	n, err := r.writeRecordLocked(ci, data)
	if err != nil {
		return r.failLocked(err)
	}
	r.growLocked(n)
	r.filePkts++
	r.packets.Add(1)
	r.bytes.Add(uint64(len(data)))
	r.armLocked()
	return nil
}

// Flush writes buffered data to the current file.
func (r *Ring) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usableLocked(); err != nil {
		return err
	}
	return r.flushLocked()
}

// Close flushes and closes the current file. Further writes return ErrRingClosed; Close
// returns the ring's first write error, if any.
func (r *Ring) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.err
	}
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
	}
	err := r.closeFileLocked()
	if err != nil && r.err == nil {
		r.err = err
	}
	r.root.Close()
	return r.err
}

func (r *Ring) usableLocked() error {
	if r.closed {
		return ErrRingClosed
	}
	return r.err
}

func (r *Ring) failLocked(err error) error {
	if r.err == nil {
		r.err = &FileError{Op: "write", File: RingFileName(r.base, r.files, r.index), Err: err}
	}
	return r.err
}

// growLocked accounts n more bytes in the current file.
func (r *Ring) growLocked(n int64) {
	r.size += n
	r.sizes[r.index] = r.size
	r.onDisk.Add(n)
	r.fileBytes.Add(uint64(n))
}

func (r *Ring) flushLocked() error {
	if r.f == nil || r.bw.Buffered() == 0 {
		return nil
	}
	if err := r.bw.Flush(); err != nil {
		return r.failLocked(err)
	}
	return nil
}

// armLocked makes sure buffered data is flushed within the flush interval.
func (r *Ring) armLocked() {
	if r.armed || r.bw.Buffered() == 0 {
		return
	}
	r.armed = true
	// A new timer each time rather than Reset: k8s.io/utils' fake clock cannot fire a Reset
	// AfterFunc timer twice. The callback runs in a goroutine of its own: the fake clock
	// calls it with its own lock held, which this ring's mu (held here) must not wait for.
	r.timer = r.clock.AfterFunc(r.interval, func() { go r.timedFlush() })
}

func (r *Ring) timedFlush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed = false
	if r.closed || r.err != nil {
		return
	}
	_ = r.flushLocked() // a failure is kept in r.err and returned by the next call
}

// rotateLocked moves on to the next file of the ring.
func (r *Ring) rotateLocked() error {
	r.rotations.Add(1)
	return r.reopenLocked((r.index + 1) % r.files)
}

// reopenLocked finishes the current file and starts file index.
func (r *Ring) reopenLocked(index int) error {
	if err := r.closeFileLocked(); err != nil {
		if r.err == nil {
			r.err = &FileError{Op: "close", File: RingFileName(r.base, r.files, r.index), Err: err}
		}
		return r.err
	}
	r.index = index
	return r.openLocked()
}

func (r *Ring) closeFileLocked() error {
	if r.f == nil {
		return nil
	}
	ferr := r.bw.Flush()
	cerr := r.f.Close()
	r.f = nil
	r.bw.Reset(nil)
	return errors.Join(ferr, cerr)
}

// openLocked replaces file r.index with a new file holding only the global header. The old
// file is unlinked and a new inode created (O_EXCL: nothing at that name is followed or
// reused), so readers holding the old file keep its data and nothing is truncated in place.
func (r *Ring) openLocked() error {
	r.pending = true
	name := RingFileName(r.base, r.files, r.index)
	if r.check != nil {
		if err := r.check(); err != nil {
			return &FileError{Op: "create", File: name, Err: err}
		}
	}
	if err := r.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &FileError{Op: "remove", File: name, Err: err}
	}
	r.onDisk.Add(-r.sizes[r.index])
	r.sizes[r.index] = 0
	f, err := r.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, r.perm)
	if err != nil {
		return &FileError{Op: "create", File: name, Err: err}
	}
	r.f, r.pending = f, false
	r.bw.Reset(f)
	r.size, r.filePkts = 0, 0
	h := r.fileHeaderLocked()
	r.growLocked(int64(len(h)))
	if _, err := r.bw.Write(h); err != nil {
		return r.failLocked(err)
	}
	r.armLocked()
	return nil
}
