package capture

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"k8s.io/klog/v2"
)

// PumpOptions are Pump's optional parts.
type PumpOptions struct {
	// Tap, when set, is given every packet after the ring wrote it (live streams). data is
	// valid only during the call; Tap must not block for long: the capture waits for it.
	Tap func(ci gopacket.CaptureInfo, data []byte)
}

// PumpStats count what one Pump call moved from its source to the ring.
type PumpStats struct {
	Packets uint64 // packets written
	Bytes   uint64 // captured bytes of those packets (record data, without pcap headers)
}

// Pump copies packets from src to ring until src ends (io.EOF) or ctx is done, and flushes
// the ring before it returns. It first sets the ring's format to the source's, so a new
// source (a restarted capture process) continues the same ring.
//
// When ctx is done Pump closes src to end a blocked ReadPacket; the caller still calls
// src.Close afterwards for the source's verdict (Close is idempotent). Pump returns nil when
// the source ended or ctx was done, and an error when reading a packet or writing the ring
// failed. It does not close the ring.
func Pump(ctx context.Context, src Source, ring *Ring, o PumpOptions) (PumpStats, error) {
	var st PumpStats
	if err := ring.SetFormat(src.LinkType(), src.Snaplen()); err != nil {
		return st, fmt.Errorf("set ring format: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { _ = src.Close() })
	defer stop()
	err := pumpLoop(ctx, src, ring, o.Tap, &st)
	if ferr := ring.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("flush ring: %w", ferr)
	}
	klog.FromContext(ctx).V(4).Info("Pump ended", "packets", st.Packets, "bytes", st.Bytes, "err", err)
	return st, err
}

func pumpLoop(ctx context.Context, src Source, ring *Ring, tap func(gopacket.CaptureInfo, []byte), st *PumpStats) error {
	for {
		ci, data, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // Pump closed the source: how it failed does not matter
			}
			return fmt.Errorf("read packet: %w", err)
		}
		if err := ring.WritePacket(ci, data); err != nil {
			return err
		}
		st.Packets++
		st.Bytes += uint64(len(data))
		if tap != nil {
			tap(ci, data)
		}
	}
}
