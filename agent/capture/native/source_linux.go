package native

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent/capture"
)

var _ capture.Source = (*Source)(nil)

// Source is one AF_PACKET TPACKET_V3 capture. ReadPacket is for one goroutine; the other
// methods may be called from any.
//
// Stop takes the socket off the kernel's receive path (bind to protocol 0, which returns
// only when no CPU is delivering to it any more) and leaves the ring to the reader:
// ReadPacket returns what the ring holds, waits the time the kernel takes to hand over the
// block it was filling (two block timeouts), and then returns io.EOF. Close discards what is
// not read, waits for a ReadPacket in progress to return (it returns io.EOF), then unmaps
// the ring and closes the socket.
type Source struct {
	log     klog.Logger
	snaplen int
	drain   time.Duration // how long after Stop the last block may take to be handed over
	wake    int           // eventfd: Stop and Close wake a reader waiting in poll
	stopped chan struct{} // closed by Stop

	stopOnce  sync.Once
	stopAfter func() bool // unregisters Stop from the Open context
	stopAt    atomic.Int64
	closing   atomic.Bool
	captured  atomic.Uint64

	// readMu is held by ReadPacket: Close takes it to know no reader uses the ring.
	readMu  sync.Mutex
	r       *ring // read by ReadPacket under readMu; closed under both locks
	buf     []byte
	pkt     packet
	readErr error // sticky: why reading ended, if not Stop or Close

	closeOnce sync.Once
	closeErr  error

	// mu protects the fields below, and the socket against close while stats or Stop use it.
	mu       sync.Mutex
	closed   bool
	received uint64
	dropped  uint64
}

func newSource(log klog.Logger, r *ring, snaplen int, wake int) *Source {
	return &Source{
		log:     log,
		r:       r,
		snaplen: snaplen,
		drain:   2*r.tov + 50*time.Millisecond,
		wake:    wake,
		stopped: make(chan struct{}),
		buf:     make([]byte, 0, min(snaplen, sll2HeaderLen+r.blockSize)),
	}
}

// LinkType implements capture.Source: LINUX_SLL2, as tcpdump -i any.
func (s *Source) LinkType() layers.LinkType { return layers.LinkTypeLinuxSLL2 }

// Snaplen implements capture.Source.
func (s *Source) Snaplen() uint32 { return uint32(s.snaplen) }

// ReadPacket implements capture.Source. data is the Source's buffer, valid until the next
// call (a copy: the ring's memory goes back to the kernel).
func (s *Source) ReadPacket() (gopacket.CaptureInfo, []byte, error) {
	s.readMu.Lock()
	defer s.readMu.Unlock()
	for {
		if s.closing.Load() || s.r == nil {
			return gopacket.CaptureInfo{}, nil, io.EOF
		}
		if s.readErr != nil {
			return gopacket.CaptureInfo{}, nil, s.readErr
		}
		ok, err := s.r.nextPacket(&s.pkt)
		if err != nil {
			s.readErr = err
			continue
		}
		if ok {
			s.captured.Add(1)
			return s.record(&s.pkt)
		}
		if err := s.wait(); err != nil {
			if !errors.Is(err, io.EOF) {
				s.readErr = err
			}
			return gopacket.CaptureInfo{}, nil, err
		}
	}
}

// record builds the packet as libpcap does for -i any: the LINUX_SLL2 header from its
// sockaddr_ll, then its data from the network header on (pcap-linux.c,
// pcap_handle_packet_mmap), cut to the snaplen. libpcap inserts no VLAN tag on LINUX_SLL2
// (its vlan_offset is -1 for that link type), so neither does this.
func (s *Source) record(p *packet) (gopacket.CaptureInfo, []byte, error) {
	var h [sll2HeaderLen]byte
	binary.BigEndian.PutUint16(h[0:2], p.protocol) // sll2_protocol
	// h[2:4]: sll2_reserved_mbz
	binary.BigEndian.PutUint32(h[4:8], uint32(p.ifindex)) // sll2_if_index
	binary.BigEndian.PutUint16(h[8:10], p.hatype)         // sll2_hatype
	h[10] = p.pkttype                                     // sll2_pkttype
	h[11] = p.halen                                       // sll2_halen
	copy(h[12:20], p.addr[:])                             // sll2_addr, all 8 bytes as libpcap copies them
	s.buf = append(append(s.buf[:0], h[:]...), p.data...)
	if len(s.buf) > s.snaplen {
		s.buf = s.buf[:s.snaplen]
	}
	ci := gopacket.CaptureInfo{
		Timestamp:      time.Unix(int64(p.sec), int64(p.nsec)),
		CaptureLength:  len(s.buf),
		Length:         sll2HeaderLen + p.length,
		InterfaceIndex: int(p.ifindex),
	}
	return ci, s.buf, nil
}

// wait blocks until the ring may hold a packet. Before Stop it waits for the socket or the
// wake-up; after Stop it waits at most until the drain time has passed since Stop, and
// then returns io.EOF.
func (s *Source) wait() error {
	fds := []unix.PollFd{{Fd: int32(s.r.fd), Events: unix.POLLIN}, {Fd: int32(s.wake), Events: unix.POLLIN}}
	timeout := -1
	if at := s.stopAt.Load(); at != 0 {
		left := time.Until(time.Unix(0, at).Add(s.drain))
		if left <= 0 {
			return io.EOF
		}
		fds = fds[:1] // the wake-up stays readable after Stop
		timeout = int(left/time.Millisecond) + 1
	}
	_, err := unix.Poll(fds, timeout)
	if err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("poll the capture socket: %w", err)
	}
	if fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
		// An error queued on the socket (e.g. ENETDOWN): read it, the socket goes on.
		if soErr, err := unix.GetsockoptInt(s.r.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && soErr != 0 {
			s.log.V(2).Info("Capture socket error", "err", unix.Errno(soErr))
		}
	}
	return nil
}

// Stop implements capture.Source: no packet enters the ring after it returns; what the
// ring holds is left to ReadPacket.
func (s *Source) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		if !s.closed {
			if err := s.r.bind(0); err != nil {
				// Not expected; the capture then ends at the drain time with what came in.
				s.log.Error(err, "Taking the capture socket off the receive path failed")
			}
		}
		s.mu.Unlock()
		s.stopAt.Store(time.Now().UnixNano())
		close(s.stopped)
		s.signal()
	})
}

// signal wakes a reader waiting in poll.
func (s *Source) signal() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(s.wake, one[:])
}

// RequestStats implements capture.Source: it reads PACKET_STATISTICS now.
func (s *Source) RequestStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.readStatsLocked()
}

func (s *Source) readStatsLocked() {
	if s.closed {
		return
	}
	rcv, drop, err := s.r.stats()
	if err != nil {
		s.log.V(2).Info("Reading capture counters failed", "err", err)
		return
	}
	s.received += rcv
	s.dropped += drop
}

// Stats implements capture.Source: Received and Dropped are the kernel's (PACKET_STATISTICS:
// packets that passed the filter, drops included, as tcpdump's "received by filter"),
// Captured the packets ReadPacket returned. After Close they are final.
func (s *Source) Stats() capture.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return capture.Stats{Captured: s.captured.Load(), Received: s.received, Dropped: s.dropped}
}

// Close implements capture.Source. It returns the error that ended reading, if any (a
// corrupt ring, a failing poll); nil after Stop, the end of Open's context, or Close.
func (s *Source) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Source) close() error {
	s.Stop()
	if s.stopAfter != nil {
		s.stopAfter()
	}
	s.closing.Store(true)
	s.signal()
	s.readMu.Lock() // a reader in poll returns within the drain time
	defer s.readMu.Unlock()
	s.mu.Lock()
	s.readStatsLocked()
	s.closed = true
	s.r.close()
	_ = unix.Close(s.wake)
	s.mu.Unlock()
	return s.readErr
}
