package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// DefaultPumpStopTimeout is PumpOptions.StopTimeout's default. It is longer than the
// tcpdump engine's own stop timeout (SIGKILL 2 s after SIGTERM), after which that source
// ends by itself: Pump's bound is only the backstop for a source that does not.
const DefaultPumpStopTimeout = 5 * time.Second

// PumpOptions are Pump's optional parts.
type PumpOptions struct {
	// Tap, when set, is given every packet after the ring wrote it (live streams). data is
	// valid only during the call; Tap must not block for long: the capture waits for it.
	Tap func(ci gopacket.CaptureInfo, data []byte)
	// FirstPacket, when set, is called once, after the ring wrote the first packet of this
	// Pump call.
	FirstPacket func()
	// StopTimeout bounds how long Pump goes on copying once ctx is done; then it closes
	// the source, discarding what the source still holds. 0 means DefaultPumpStopTimeout.
	StopTimeout time.Duration
	// Clock times StopTimeout; nil means the real clock.
	Clock clock.Clock
}

// PumpStats count what one Pump call moved from its source to the ring.
type PumpStats struct {
	Packets uint64 // packets written
	Bytes   uint64 // captured bytes of those packets (record data, without pcap headers)
	// StopTimedOut: the source had not ended StopTimeout after it was stopped, and Pump
	// closed it: packets it still held were lost.
	StopTimedOut bool
}

// Pump copies packets from src to ring until src ends (io.EOF), and flushes the ring before
// it returns. It first sets the ring's format to the source's, so a new source (a restarted
// capture process) continues the same ring.
//
// When ctx is done Pump stops src (Source.Stop) and goes on copying until src ends: the
// packets the capture had taken before it stopped (for tcpdump: the last ones before a
// max_duration, still in its buffer and the pipe) are written too. If src has not ended
// StopTimeout later, Pump closes it, which discards the rest and ends a blocked ReadPacket,
// and says so in the log and in PumpStats. The caller calls src.Close after Pump returned,
// to reap the capture and get its verdict; closing it before would discard what Pump has not
// copied yet.
//
// Pump returns nil when the source ended, and an error when reading a packet (before ctx
// was done) or writing the ring failed. It does not close the ring.
func Pump(ctx context.Context, src Source, ring *Ring, o PumpOptions) (PumpStats, error) {
	var st PumpStats
	if err := ring.SetFormat(src.LinkType(), src.Snaplen()); err != nil {
		return st, fmt.Errorf("set ring format: %w", err)
	}
	log := klog.FromContext(ctx)
	ended := make(chan struct{})   // closed when src ended or writing failed
	stopped := make(chan struct{}) // closed when the stopping goroutine returned
	var timedOut atomic.Bool
	unregister := context.AfterFunc(ctx, func() {
		defer close(stopped)
		timedOut.Store(stopSource(log, src, o, ended))
	})
	err := pumpLoop(ctx, src, ring, o, &st)
	close(ended)
	if !unregister() {
		<-stopped // ctx ended: the goroutine returns at once, or after the Close it started
	}
	st.StopTimedOut = timedOut.Load()
	if ferr := ring.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("flush ring: %w", ferr)
	}
	log.V(4).Info("Pump ended", "packets", st.Packets, "bytes", st.Bytes, "stopTimedOut", st.StopTimedOut, "err", err)
	return st, err
}

// stopSource stops src and closes it if it has not ended (ended) within o.StopTimeout. It
// reports whether it had to close it.
func stopSource(log klog.Logger, src Source, o PumpOptions, ended <-chan struct{}) bool {
	src.Stop()
	timeout, clk := o.StopTimeout, o.Clock
	if timeout <= 0 {
		timeout = DefaultPumpStopTimeout
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	t := clk.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ended:
		return false
	case <-t.C():
	}
	log.Info("Capture did not end after it was stopped; dropping the packets it still holds", "stopTimeout", timeout)
	_ = src.Close() // its verdict is the caller's
	return true
}

func pumpLoop(ctx context.Context, src Source, ring *Ring, o PumpOptions, st *PumpStats) error {
	for {
		ci, data, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				// Pump stopped the source (and may have closed it): that is its end.
				klog.FromContext(ctx).V(2).Info("Stopped capture ended with a read error", "err", err)
				return nil
			}
			return fmt.Errorf("read packet: %w", err)
		}
		if err := ring.WritePacket(ci, data); err != nil {
			return err
		}
		st.Packets++
		st.Bytes += uint64(len(data))
		if st.Packets == 1 && o.FirstPacket != nil {
			o.FirstPacket()
		}
		if o.Tap != nil {
			o.Tap(ci, data)
		}
	}
}
