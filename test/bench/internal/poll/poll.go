// Package poll holds the waits the bench's measurements are made of: a condition polled with
// a deadline, and a capture file polled until it exists and then until it holds a packet
// (cmd/latency, cmd/alertlat). Times are the wall clock's: these programs measure it.
package poll

import (
	"fmt"
	"time"
)

// Until calls cond every interval until it returns true and returns that moment. An error
// from cond does not end the wait: it is retried until timeout has passed and then reported
// with the deadline.
func Until(interval, timeout time.Duration, cond func() (bool, error)) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		now := time.Now()
		if ok {
			return now, nil
		}
		if err != nil {
			last = err
		}
		if now.After(deadline) {
			if last != nil {
				return now, fmt.Errorf("not within %v (last error: %v)", timeout, last)
			}
			return now, fmt.Errorf("not within %v", timeout)
		}
		time.Sleep(interval)
	}
}

// FirstPacket polls probe every interval (Until) until it reports that the capture file holds
// a packet, and returns the milliseconds from t0 until probe first reported the file to exist
// (fileMS) and until the packet (packetMS); -1 for what was not reached.
func FirstPacket(t0 time.Time, interval, timeout time.Duration, probe func() (exists, packet bool, err error)) (fileMS, packetMS float64, err error) {
	var tFile time.Time
	tPacket, err := Until(interval, timeout, func() (bool, error) {
		exists, packet, err := probe()
		if exists && tFile.IsZero() {
			tFile = time.Now()
		}
		return packet, err
	})
	fileMS, packetMS = -1, -1
	if !tFile.IsZero() {
		fileMS = Millis(t0, tFile)
	}
	if err == nil {
		packetMS = Millis(t0, tPacket)
	}
	return fileMS, packetMS, err
}

// Millis is the time from t0 to t in milliseconds, to the microsecond.
func Millis(t0, t time.Time) float64 { return float64(t.Sub(t0).Microseconds()) / 1000 }
