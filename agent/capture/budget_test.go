package capture_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/capturetest"
	"github.com/podcap/podcap/agent/metrics"
)

// budgetSpec is a policy capture whose worst case is exactly known: files of 100,000 bytes
// at snaplen 128, and 4 KiB for its capture.json.
func budgetSpec(pod string, files int) capture.Spec {
	s := policySpec(pod, 0)
	s.Files, s.FileSize, s.Snaplen = files, 100_000, 128
	return s
}

// reserve is what budgetSpec(_, files) reserves.
func reserve(files int) int64 { return capture.WorstCaseBytes(files, 100_000, 128) + 8192 }

// Running captures reserve their worst case against the node's byte budget: what does not
// fit waits with an Event and a metric and starts when a capture ends; what can never fit is
// refused.
func TestCapturesReserveTheirWorstCase(t *testing.T) {
	f := newParts(t, nil)
	one := reserve(2)
	cfg := f.config(8)
	cfg.Retention.MaxBytes = 2*one + one/2 // two fit, a third does not
	f.m = runManager(t, cfg)
	for _, pod := range []string{"a", "b", "c"} {
		f.res.Set("default", pod, capture.Target{PID: 1})
	}
	ensure(t, f.m, budgetSpec("a", 2))
	ensure(t, f.m, budgetSpec("b", 2))
	if q, err := f.m.Ensure(budgetSpec("c", 2)); err != nil || !q {
		t.Fatalf("third Ensure: queued %v, err %v; want queued for the budget", q, err)
	}
	if n := f.events.count("CaptureQueued: capture waits: it may write up to"); n != 1 {
		t.Fatalf("%d CaptureQueued Events for the budget:\n%s", n, f.events)
	}
	if got := testutil.ToFloat64(f.metrics.CapturesQueued.WithLabelValues(metrics.QueuedBudget)); got != 1 {
		t.Fatalf("podcap_captures_queued{reason=budget} = %v, want 1", got)
	}
	f.m.Stop("default", "a")
	eventually(t, "c running once a ended", func() bool { return phase(f.m, "default", "c") == capture.PhaseRunning })
	if got := testutil.ToFloat64(f.metrics.CapturesQueued.WithLabelValues(metrics.QueuedBudget)); got != 0 {
		t.Fatalf("podcap_captures_queued{reason=budget} = %v, want 0", got)
	}

	_, err := f.m.Ensure(budgetSpec("huge", 6)) // 6 × 100 KB: more than the whole budget
	if !errors.Is(err, capture.ErrOverBudget) || !strings.Contains(err.Error(), "--retention-max-bytes") {
		t.Fatalf("Ensure over the whole budget: %v, want ErrOverBudget naming the flag", err)
	}
}

// A queued capture that waits for room does not hold back a smaller one behind it.
func TestSmallerCaptureStartsPastOneWaitingForRoom(t *testing.T) {
	f := newParts(t, nil)
	cfg := f.config(8)
	cfg.Retention.MaxBytes = reserve(2) + reserve(1)
	f.m = runManager(t, cfg)
	for _, pod := range []string{"a", "big", "small"} {
		f.res.Set("default", pod, capture.Target{PID: 1})
	}
	ensure(t, f.m, budgetSpec("a", 2))
	if q, _ := f.m.Ensure(budgetSpec("big", 2)); !q {
		t.Fatal("big not queued")
	}
	if q, err := f.m.Ensure(budgetSpec("small", 1)); q || err != nil {
		t.Fatalf("small: queued %v, err %v; want started (it fits beside a)", q, err)
	}
	eventually(t, "small running", func() bool { return phase(f.m, "default", "small") == capture.PhaseRunning })
	if p := phase(f.m, "default", "big"); p != capture.PhaseQueued {
		t.Fatalf("big is %s", p)
	}
}

// A finished capture's files are evicted, oldest first, to make room for a new capture's
// reservation; and podcap_capture_file_bytes follows the running rings without a sweep.
func TestNewCaptureEvictsFinishedFilesForItsReservation(t *testing.T) {
	f := newParts(t, func(capture.Target, capture.SourceOptions) *capturetest.Source {
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 128, pkt(100), pkt(100)).Hold()
	})
	cfg := f.config(8)
	one := reserve(2)
	cfg.Retention.MaxBytes = one + 100 // one capture's worst case, and a little
	cfg.Retention.Interval = time.Hour // no periodic sweep: what happens is the reservation's doing
	f.m = runManager(t, cfg)
	f.res.Set("default", "old", capture.Target{PID: 1})
	f.res.Set("default", "new", capture.Target{PID: 2})
	ensure(t, f.m, budgetSpec("old", 2))
	want := int64(24 + 2*(16+100))
	eventually(t, "podcap_capture_file_bytes to count the running ring", func() bool {
		return testutil.ToFloat64(f.metrics.CaptureFileBytes) == float64(want)
	})
	st, _ := f.m.Status("default", "old")
	f.m.Stop("default", "old")
	eventually(t, "old stopped", func() bool { return f.events.count("default/old Normal CaptureStopped") == 1 })
	if !exists(st.Dir) {
		t.Fatal("a finished capture evicted while it fit the budget")
	}
	ensure(t, f.m, budgetSpec("new", 2))
	eventually(t, "old evicted for new's reservation, and counted", func() bool {
		return !exists(st.Dir) && testutil.ToFloat64(f.metrics.RetentionEvictions.WithLabelValues("budget")) == 1
	})
}

// tmpfs mounts a tmpfs with opts (e.g. "size=1m") on a new directory; unmounted at the end.
func tmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (make test runs as root)")
	}
	dir := t.TempDir()
	if err := unix.Mount("podcap-test", dir, "tmpfs", 0, opts); err != nil {
		t.Fatalf("mount tmpfs %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// bigPackets is a source of n packets of 1000 bytes that then waits, as a live capture does.
func bigPackets(n int) func(capture.Target, capture.SourceOptions) *capturetest.Source {
	return func(capture.Target, capture.SourceOptions) *capturetest.Source {
		pkts := make([]capturetest.Packet, n)
		for i := range pkts {
			pkts[i] = capturetest.NewPacket(gopacket.CaptureInfo{Timestamp: time.Unix(1700000000, 0)}, make([]byte, 1000))
		}
		return capturetest.NewSource(layers.LinkTypeLinuxSLL2, 1500, pkts...).Hold()
	}
}

// captureOnTmpfs runs a policy capture of files files of 100,000 bytes, fed packets packets
// of 1000 bytes, on a tmpfs mounted with opts under a manager keeping minFree bytes free, and
// waits for its first files failure.
func captureOnTmpfs(t *testing.T, opts string, minFree int64, packets, files int) *fixture {
	t.Helper()
	f := newParts(t, bigPackets(packets))
	f.dir = tmpfs(t, opts)
	cfg := f.config(4)
	cfg.MinFreeBytes = minFree
	f.m = runManager(t, cfg)
	f.res.Set("default", "web", capture.Target{PID: 1})
	s := budgetSpec("web", files)
	s.Snaplen = 1500
	ensure(t, f.m, s)
	eventually(t, "a files failure", func() bool {
		return testutil.ToFloat64(f.metrics.CaptureFailures.WithLabelValues(metrics.FailureFiles)) >= 1
	})
	return f
}

// On a small file system, a ring stops before a file could take the free space under
// --min-free-bytes, and says so in a CaptureFailed Event counted as a files failure.
func TestRingStopsAtTheFreeSpaceFloor(t *testing.T) {
	const minFree = 600_000
	f := captureOnTmpfs(t, "size=1m", minFree, 2000, 10) // 2 MB of packets for a 1 MB file system
	if n := f.events.count("CaptureFailed: capture stopped writing: create ring file"); n < 1 || !strings.Contains(f.events.String(), "--min-free-bytes") {
		t.Fatalf("no CaptureFailed Event naming the floor:\n%s", f.events)
	}
	if got := testutil.ToFloat64(f.metrics.CaptureFailures.WithLabelValues(metrics.FailureExited)); got != 0 {
		t.Fatalf("a full disk counted as the process exiting (%v)", got)
	}
	if free := freeBytes(t, f.dir); free < minFree {
		t.Fatalf("%d bytes free, under the floor of %d", free, minFree)
	}
	// the files written before the floor was reached are kept
	if m, _ := filepath.Glob(filepath.Join(f.dir, "default", "web", "policy-*", "capture-web.pcap*")); len(m) < 2 {
		t.Fatalf("ring files %v", m)
	}
}

// A file system that is really full (here: out of inodes) ends the capture as a files
// failure whose Event says the disk is full, not as the capture process exiting.
func TestFullDiskIsAFilesFailure(t *testing.T) {
	// a handful of inodes: the directories, capture.json and the ring's first file take them,
	// and a later ring file finds none (ENOSPC) with plenty of bytes free
	f := captureOnTmpfs(t, "size=4m,nr_inodes=7", 0, 300, 3)
	if n := f.events.count("CaptureFailed: the disk is full: cannot write the capture files in"); n < 1 {
		t.Fatalf("no CaptureFailed Event saying the disk is full:\n%s", f.events)
	}
	if got := testutil.ToFloat64(f.metrics.CaptureFailures.WithLabelValues(metrics.FailureExited)); got != 0 {
		t.Fatalf("a full disk counted as the process exiting (%v)", got)
	}
}
