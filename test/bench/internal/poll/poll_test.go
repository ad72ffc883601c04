package poll

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		results []error // cond's error per call; true after the list, unless never
		never   bool
		wantErr string
	}{
		{name: "at once"},
		{name: "after errors", results: []error{boom, boom}},
		{name: "never", never: true, wantErr: "not within 20ms"},
		{name: "never, an error", results: []error{boom}, never: true, wantErr: "not within 20ms (last error: boom)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			_, err := Until(time.Millisecond, 20*time.Millisecond, func() (bool, error) {
				calls++
				if calls <= len(tc.results) {
					return false, tc.results[calls-1]
				}
				return !tc.never, nil
			})
			if tc.wantErr == "" {
				if err != nil || calls != len(tc.results)+1 {
					t.Errorf("Until: %v after %d calls, want nil after %d", err, calls, len(tc.results)+1)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Until: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestFirstPacket(t *testing.T) {
	// probe results per call: nothing, the file, the file, the packet
	steps := []struct{ exists, packet bool }{{}, {exists: true}, {exists: true}, {exists: true, packet: true}}
	calls := 0
	t0 := time.Now()
	fileMS, packetMS, err := FirstPacket(t0, time.Millisecond, time.Second, func() (bool, bool, error) {
		s := steps[min(calls, len(steps)-1)]
		calls++
		return s.exists, s.packet, nil
	})
	if err != nil || calls != len(steps) {
		t.Fatalf("FirstPacket: %v after %d calls, want nil after %d", err, calls, len(steps))
	}
	if fileMS < 0 || packetMS < fileMS {
		t.Errorf("file %v ms, packet %v ms: want 0 ≤ file ≤ packet", fileMS, packetMS)
	}

	// no file: neither is reached
	fileMS, packetMS, err = FirstPacket(t0, time.Millisecond, 10*time.Millisecond, func() (bool, bool, error) { return false, false, nil })
	if err == nil || fileMS != -1 || packetMS != -1 {
		t.Errorf("FirstPacket of no file: %v ms, %v ms, %v; want -1, -1, an error", fileMS, packetMS, err)
	}
	// a file without a packet: only the file
	fileMS, packetMS, err = FirstPacket(t0, time.Millisecond, 10*time.Millisecond, func() (bool, bool, error) { return true, false, nil })
	if err == nil || fileMS < 0 || packetMS != -1 {
		t.Errorf("FirstPacket of an empty file: %v ms, %v ms, %v; want ≥ 0, -1, an error", fileMS, packetMS, err)
	}
}

func TestMillis(t *testing.T) {
	t0 := time.Now()
	if got := Millis(t0, t0.Add(1500*time.Microsecond+700*time.Nanosecond)); got != 1.5 {
		t.Errorf("Millis = %v, want 1.5", got)
	}
}
