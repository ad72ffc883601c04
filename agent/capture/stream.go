package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/podcap/podcap/agent/metrics"
)

// Live streams: each capture has a hub that Pump's Tap feeds and that fans every packet out
// to the capture's live readers as a pcap stream (a pcap file header with the capture's link
// type and snaplen, then one record per packet, microsecond timestamps). The stream is pcap
// even when the capture's files are pcapng: it is what `wireshark -k -i -` and
// `tcpdump -r -` read, and a header needs no section of its own.
//
// The capture never waits for a reader: each reader has a bounded buffer (packets and
// bytes), and one whose buffer is full when a packet comes is cut off, counted in
// podcap_stream_readers_cut_total; the packet still went to the ring and to the other
// readers. The hub belongs to the capture, not to a capture process: a restarted process
// (a new Pump) feeds the same readers, and the capture's end ends them.

// Defaults and bounds of StreamConfig.
const (
	DefaultMaxStreamReaders           = 10
	DefaultMaxStreamReadersPerCapture = 4
	// DefaultStreamBufferBytes is what a reader may fall behind by, in pcap bytes, before
	// it is cut off: about 30 ms of a 1 Gbit/s capture, enough for a TCP reader's window.
	DefaultStreamBufferBytes = 4 << 20
	// DefaultStreamBufferPackets bounds a reader's buffer in packets too (a burst of small packets).
	DefaultStreamBufferPackets = 8192
	// MinStreamBufferBytes holds two records at the largest snaplen.
	MinStreamBufferBytes = 2 * (MaxSnaplen + pcapRecordHeaderLen)
)

// StreamConfig bounds the live streams of a Manager.
type StreamConfig struct {
	MaxReaders           int   // per node (--max-stream-readers)
	MaxReadersPerCapture int   // per capture (--max-stream-readers-per-capture)
	BufferBytes          int64 // per reader (--stream-buffer-bytes), at least MinStreamBufferBytes
	BufferPackets        int   // per reader
	// Metrics are podcap_stream_readers and podcap_stream_readers_cut_total; nil: unregistered.
	Metrics *metrics.Streams
}

func (c *StreamConfig) setDefaults() {
	if c.MaxReaders <= 0 {
		c.MaxReaders = DefaultMaxStreamReaders
	}
	if c.MaxReadersPerCapture <= 0 {
		c.MaxReadersPerCapture = DefaultMaxStreamReadersPerCapture
	}
	if c.BufferBytes <= 0 {
		c.BufferBytes = DefaultStreamBufferBytes
	}
	c.BufferBytes = max(c.BufferBytes, MinStreamBufferBytes)
	if c.BufferPackets <= 0 {
		c.BufferPackets = DefaultStreamBufferPackets
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewStreams(nil)
	}
}

// Why a stream ended (Subscription.Next) or was refused (Manager.Subscribe).
var (
	ErrStreamTooSlow     = errors.New("live stream reader fell behind its buffer and was cut off")
	ErrStreamEnded       = errors.New("capture ended")
	ErrStreamFormat      = errors.New("the capture's link type or snaplen changed (new capture process)")
	ErrStreamClosed      = errors.New("live stream closed by its reader")
	ErrCaptureStreams    = errors.New("too many live stream readers of this capture")
	ErrNodeStreams       = errors.New("too many live stream readers on this node")
	ErrCaptureNotRunning = errors.New("capture is not running")
)

// streamLimits is the node's count of live readers.
type streamLimits struct {
	cfg StreamConfig
	// mu protects the field below.
	mu      sync.Mutex
	readers int
}

func newStreamLimits(cfg StreamConfig) *streamLimits {
	cfg.setDefaults()
	return &streamLimits{cfg: cfg}
}

func (l *streamLimits) acquire() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.readers >= l.cfg.MaxReaders {
		return false
	}
	l.readers++
	l.cfg.Metrics.Readers.Set(float64(l.readers))
	return true
}

func (l *streamLimits) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.readers--
	l.cfg.Metrics.Readers.Set(float64(l.readers))
}

// hub fans one capture's packets out to its live readers.
type hub struct {
	limits *streamLimits
	n      atomic.Int32 // len(subs), read by tap without mu

	// mu protects the fields below. Every send on and close of a reader's channel is
	// done with it held.
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	header []byte // the pcap file header; nil until the first capture process started
	ended  bool
}

func newHub(l *streamLimits) *hub {
	return &hub{limits: l, subs: map[*Subscription]struct{}{}}
}

// Subscription is one live reader of a capture.
type Subscription struct {
	h      *hub
	c      chan []byte
	queued atomic.Int64 // bytes in c
	// err is why c was closed; set (with h.mu held) before the close.
	err  error
	done bool // under h.mu
}

// subscribe adds a reader; it gets the pcap file header first when the format is known.
func (h *hub) subscribe() (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return nil, ErrStreamEnded
	}
	cfg := h.limits.cfg
	if len(h.subs) >= cfg.MaxReadersPerCapture {
		return nil, ErrCaptureStreams
	}
	if !h.limits.acquire() {
		return nil, ErrNodeStreams
	}
	s := &Subscription{h: h, c: make(chan []byte, cfg.BufferPackets)}
	if h.header != nil {
		s.offer(h.header, cfg.BufferBytes)
	}
	h.subs[s] = struct{}{}
	h.n.Add(1)
	return s, nil
}

// setFormat is called before each capture process's packets: its link type and snaplen
// make the stream's header. Readers that got another header cannot read on: they end.
func (h *hub) setFormat(lt layers.LinkType, snaplen uint32) {
	hdr := pcapFileHeader(lt, snaplen)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.header != nil && string(h.header) == string(hdr) {
		return
	}
	for s := range h.subs {
		if h.header != nil {
			h.endLocked(s, ErrStreamFormat)
		} else if !s.offer(hdr, h.limits.cfg.BufferBytes) {
			h.endLocked(s, ErrStreamTooSlow) // cannot happen: nothing was queued before
		}
	}
	h.header = hdr
}

// tap is PumpOptions.Tap: it copies the packet once, as a pcap record, and queues the copy
// for every reader. It never blocks on a reader.
func (h *hub) tap(ci gopacket.CaptureInfo, data []byte) {
	if h.n.Load() == 0 {
		return
	}
	rec := make([]byte, pcapRecordHeaderLen+len(data))
	putPcapRecordHeader(rec, ci, len(data))
	copy(rec[pcapRecordHeaderLen:], data)
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if !s.offer(rec, h.limits.cfg.BufferBytes) {
			h.endLocked(s, ErrStreamTooSlow)
			h.limits.cfg.Metrics.Cut.Inc()
		}
	}
}

// end ends every reader: the capture ended. No reader joins afterwards.
func (h *hub) end() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ended = true
	for s := range h.subs {
		h.endLocked(s, ErrStreamEnded)
	}
}

// endLocked closes a reader's channel with err as the reason; what it holds can still be read.
func (h *hub) endLocked(s *Subscription, err error) {
	if s.done {
		return
	}
	s.done, s.err = true, err
	delete(h.subs, s)
	h.n.Add(-1)
	h.limits.release()
	close(s.c) // last: a reader that sees the end sees its place freed
}

// offer queues b unless the reader's buffer cannot take it; h.mu is held.
func (s *Subscription) offer(b []byte, maxBytes int64) bool {
	n := int64(len(b))
	if s.queued.Add(n) > maxBytes {
		s.queued.Add(-n)
		return false
	}
	select {
	case s.c <- b:
		return true
	default:
		s.queued.Add(-n)
		return false
	}
}

// Next returns the next part of the pcap stream: the file header first, then one record a
// call. The bytes are shared with other readers: do not modify them. After the stream
// ended it returns why (ErrStreamTooSlow, ErrStreamEnded, ErrStreamFormat, ErrStreamClosed),
// once what was queued has been read; ctx's error when ctx ends first.
func (s *Subscription) Next(ctx context.Context) ([]byte, error) {
	select {
	case b, ok := <-s.c:
		if !ok {
			return nil, s.err // written before the close
		}
		s.queued.Add(-int64(len(b)))
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close ends the stream (the reader went away) and frees its place. It may be called more
// than once, and after the stream ended.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.h.endLocked(s, ErrStreamClosed)
}

// pcapFileHeader is pcap's global header (24 bytes) as the ring and the streams write it.
func pcapFileHeader(lt layers.LinkType, snaplen uint32) []byte {
	h := make([]byte, pcapFileHeaderLen)
	// 8:12 thiszone and 12:16 sigfigs are 0, as libpcap writes them.
	binary.LittleEndian.PutUint32(h[0:4], pcapMagicMicro)
	binary.LittleEndian.PutUint16(h[4:6], pcapVersionMajor)
	binary.LittleEndian.PutUint16(h[6:8], pcapVersionMinor)
	binary.LittleEndian.PutUint32(h[16:20], snaplen)
	binary.LittleEndian.PutUint32(h[20:24], uint32(lt))
	return h
}

// putPcapRecordHeader writes a pcap record header (16 bytes) for n bytes of ci's packet.
func putPcapRecordHeader(b []byte, ci gopacket.CaptureInfo, n int) {
	ts := ci.Timestamp
	binary.LittleEndian.PutUint32(b[0:4], uint32(ts.Unix()))
	binary.LittleEndian.PutUint32(b[4:8], uint32(ts.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(b[8:12], uint32(n))
	binary.LittleEndian.PutUint32(b[12:16], uint32(ci.Length))
}

// Buffered returns how many parts of the stream are queued for the reader.
func (s *Subscription) Buffered() int { return len(s.c) }
