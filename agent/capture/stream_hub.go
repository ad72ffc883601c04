package capture

import (
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// StreamHub is one capture's live-stream hub on its own, outside a Manager, for programs
// that run the capture pipeline without the Manager (test/bench/cmd/pipeline measures what
// live readers cost a capture with it). It is the hub a Manager makes for each capture
// (Manager.Subscribe): the same fan-out, bounds, cut-off and metrics. The agent does not use
// this type.
type StreamHub struct{ h *hub }

// NewStreamHub returns a hub bounded by cfg (its zero fields take the defaults of a
// Manager's StreamConfig). MaxReaders bounds this hub's readers as it bounds a node's.
func NewStreamHub(cfg StreamConfig) *StreamHub {
	return &StreamHub{h: newHub(newStreamLimits(cfg))}
}

// SetFormat sets the stream's link type and snaplen (its pcap file header); call it before
// Pump, as the Manager does before each capture process's packets.
func (s *StreamHub) SetFormat(lt layers.LinkType, snaplen uint32) { s.h.setFormat(lt, snaplen) }

// Tap is PumpOptions.Tap: it queues the packet for every reader and never blocks on one.
func (s *StreamHub) Tap(ci gopacket.CaptureInfo, data []byte) { s.h.tap(ci, data) }

// Subscribe adds a reader (ErrCaptureStreams, ErrNodeStreams or ErrStreamEnded when it cannot).
func (s *StreamHub) Subscribe() (*Subscription, error) { return s.h.subscribe() }

// End ends every reader (the capture ended); what they hold can still be read.
func (s *StreamHub) End() { s.h.end() }
