// Package capturetest has hand-written fakes of the capture package's interfaces for unit
// tests: a Source replaying packets from a slice, an Engine opening such sources and
// recording its calls, and a Resolver backed by a map. All are safe for concurrent use.
package capturetest

import (
	"io"
	"sync"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/capture"
)

// Packet is one packet of a fake Source.
type Packet struct {
	CI   gopacket.CaptureInfo
	Data []byte
}

// NewPacket returns a packet of data captured whole at ci.Timestamp.
func NewPacket(ci gopacket.CaptureInfo, data []byte) Packet {
	ci.CaptureLength = len(data)
	if ci.Length < len(data) {
		ci.Length = len(data)
	}
	return Packet{CI: ci, Data: data}
}

var _ capture.Source = (*Source)(nil)

// Source is a capture.Source that returns its packets in order, then ends with io.EOF (or
// the error given to EndWith). A held source (Hold) instead blocks after its packets until
// Stop or Close, as a live capture without traffic does. As with a real capture, Stop lets
// ReadPacket return the packets not read yet before the end, and Close ends it at once.
type Source struct {
	linkType layers.LinkType
	snaplen  uint32
	closed   chan struct{}
	stopped  chan struct{}
	more     chan struct{} // Push wakes a held ReadPacket

	// mu protects the fields below.
	mu        sync.Mutex
	packets   []Packet
	next      int
	hold      bool
	deaf      bool // Stop does not end the source: only Close does
	endErr    error
	closeErr  error
	slowClose <-chan struct{} // Close returns only once this is closed
	closes    int
	statsReqs int
	stats     capture.Stats
}

// NewSource returns a source of the given format replaying packets.
func NewSource(lt layers.LinkType, snaplen uint32, packets ...Packet) *Source {
	return &Source{linkType: lt, snaplen: snaplen, packets: packets, closed: make(chan struct{}), stopped: make(chan struct{}),
		more: make(chan struct{}, 1)}
}

// Hold makes ReadPacket block after the last packet until Stop or Close, and returns s.
func (s *Source) Hold() *Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = true
	return s
}

// IgnoreStop makes a held source ignore Stop: it ends only with Close, as a process that
// does not die of SIGTERM and whose kill never comes. It returns s.
func (s *Source) IgnoreStop() *Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deaf = true
	return s
}

// EndWith makes ReadPacket return err instead of io.EOF after the last packet (or, when
// held, after Close), and Close return closeErr; it returns s.
func (s *Source) EndWith(err, closeErr error) *Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endErr, s.closeErr = err, closeErr
	return s
}

// SlowClose makes Close wait, after ending the source, until release is closed: a process
// that takes its time to stop. It returns s.
func (s *Source) SlowClose(release <-chan struct{}) *Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.slowClose = release
	return s
}

// SetStats sets what Stats returns.
func (s *Source) SetStats(st capture.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = st
}

// LinkType implements capture.Source.
func (s *Source) LinkType() layers.LinkType { return s.linkType }

// Snaplen implements capture.Source.
func (s *Source) Snaplen() uint32 { return s.snaplen }

// ReadPacket implements capture.Source.
func (s *Source) ReadPacket() (gopacket.CaptureInfo, []byte, error) {
	for {
		s.mu.Lock()
		if s.isClosed() {
			s.mu.Unlock()
			return gopacket.CaptureInfo{}, nil, s.end()
		}
		if s.next < len(s.packets) {
			p := s.packets[s.next]
			s.next++
			s.mu.Unlock()
			return p.CI, p.Data, nil
		}
		hold, deaf := s.hold, s.deaf
		s.mu.Unlock()
		stopped := s.stopped
		if deaf {
			stopped = nil
		}
		if !hold {
			return gopacket.CaptureInfo{}, nil, s.end()
		}
		select {
		case <-s.closed:
			return gopacket.CaptureInfo{}, nil, s.end()
		case <-stopped:
			if s.pending() {
				continue // packets pushed before the stop are read first
			}
			return gopacket.CaptureInfo{}, nil, s.end()
		case <-s.more:
		}
	}
}

// Push appends packets to a held source: a blocked ReadPacket returns them, as a live
// capture does when traffic comes.
func (s *Source) Push(packets ...Packet) {
	s.mu.Lock()
	s.packets = append(s.packets, packets...)
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
}

func (s *Source) pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next < len(s.packets)
}

func (s *Source) end() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endErr != nil {
		return s.endErr
	}
	return io.EOF
}

func (s *Source) isClosed() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// Stop implements capture.Source: a held source ends once its packets were read (unless
// IgnoreStop). It may be called more than once.
func (s *Source) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopped:
	default:
		close(s.stopped)
	}
}

// Stopped reports whether Stop was called.
func (s *Source) Stopped() bool {
	select {
	case <-s.stopped:
		return true
	default:
		return false
	}
}

// RequestStats implements capture.Source; it counts the calls.
func (s *Source) RequestStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statsReqs++
}

// Stats implements capture.Source.
func (s *Source) Stats() capture.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Close implements capture.Source: it ends the source at once (a blocked ReadPacket
// returns, packets not read yet are not returned) and returns the close error given to
// EndWith, after SlowClose's release if one was given. It may be called more than once.
func (s *Source) Close() error {
	s.mu.Lock()
	s.closes++
	if !s.isClosed() {
		close(s.closed)
	}
	release, err := s.slowClose, s.closeErr
	s.mu.Unlock()
	if release != nil {
		<-release
	}
	return err
}

// Closed reports whether Close was called.
func (s *Source) Closed() bool { return s.isClosed() }

// Done is closed when Close is called.
func (s *Source) Done() <-chan struct{} { return s.closed }

// Read reports how many packets ReadPacket returned.
func (s *Source) Read() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// StatsRequests reports how many times RequestStats was called.
func (s *Source) StatsRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statsReqs
}
