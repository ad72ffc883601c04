// Command pipeline runs the agent's capture pipeline on one network namespace for
// test/bench: a capture engine, capture.Pump and a capture.Ring of -files files of -size
// bytes — the same code the agent runs for a pod, without the Kubernetes parts. The engine
// (-engine) is the project's tcpdump engine (`nsenter -t PID -n tcpdump -i any -U
// --immediate-mode -Z root -s S -w -`, the default) or the native one (package
// capture/native: an AF_PACKET TPACKET_V3 socket opened in the namespace, read in this
// process; its default 32 MiB ring).
//
//	pipeline -pid 1234 -dir /tmp/cap [-engine tcpdump|native] [-files 5] [-size 1000000] [-snaplen 128] [-filter EXPR]
//	         [-stream-listen 127.0.0.1:P [-stream-max-readers 10]] [-metrics-listen 127.0.0.1:Q [-stats-interval 5s]]
//
// As in the agent, Pump's Tap feeds the capture's live-stream hub (capture.StreamHub; with
// no reader it returns at once). With -stream-listen the hub is served as the agent serves
// it: agent.StreamHandler (the route's handler, without the API's authentication) at
// GET /api/v1/captures/bench/pipeline/stream on agent.NewAPIServer over HTTPS (a
// self-signed certificate, as an agent without a mounted key pair makes), at most
// -stream-max-readers readers (the agent's --max-stream-readers and
// --max-stream-readers-per-capture; per-reader buffers at their defaults). With
// -metrics-listen an agent-like registry (the Go and process collectors, metrics.New,
// metrics.NewStreams, the API's TLS mode) is served by agent.NewMetricsServer at /metrics,
// and the capture's per-pod series are pushed from the ring's counts and the engine's
// kernel counters every -stats-interval, as the capture Manager does (its StatsInterval,
// 5 s by default). Without -metrics-listen the stream collectors are unregistered.
//
// Once the capture runs it prints "pipeline: ready pid=P tcpdump_pid=T" on stderr (T is 0
// for the native engine: no process). On SIGINT or SIGTERM it drains: it asks the source for
// its kernel counters every -drain-poll (tcpdump: SIGUSR1; native: PACKET_STATISTICS) until
// every packet the socket received is captured or dropped and the ring holds every captured
// packet (or -drain-timeout passed; see drain), reads the CPU ticks of itself and of tcpdump
// from /proc, then stops the capture and prints one JSON object (see result) on stdout. It
// exits 1 if the capture failed (tcpdump ended on its own, a read failed, or the ring could
// not be written).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/klog/v2"

	"github.com/podcap/podcap/agent"
	"github.com/podcap/podcap/agent/capture"
	"github.com/podcap/podcap/agent/capture/native"
	"github.com/podcap/podcap/agent/capture/tcpdump"
	"github.com/podcap/podcap/agent/metrics"
)

type options struct {
	engine       string
	pid          int
	netns        string
	dir          string
	base         string
	files        int
	size         int64
	snaplen      int
	filter       string
	drainPoll    time.Duration
	drainQuiet   time.Duration
	drainTimeout time.Duration
	// live streams and metrics (see the package comment)
	streamListen     string
	streamMaxReaders int
	metricsListen    string
	statsInterval    time.Duration
}

// The capture's namespace and pod in the stream's path and the per-pod metric series.
const benchNamespace, benchPod = "bench", "pipeline"

// result is what one pipeline run reports. Ticks are /proc/PID/stat utime+stime in clock
// ticks (getconf CLK_TCK), read after the drain and before the capture is stopped. The
// counters mean the same for both engines (capture.Stats): received = packets the kernel
// passed to the capture socket, drops included (tcpdump's "received by filter", which
// libpcap takes from PACKET_STATISTICS too), dropped = the kernel's drops for a full ring,
// captured = packets the engine handed on (tcpdump: written to the pipe; native: returned
// to Pump). With the native engine there is no tcpdump: tcpdump_pid and tcpdump_ticks are 0
// and all the capture's CPU is pipeline_ticks.
type result struct {
	Engine        string `json:"engine"`
	PID           int    `json:"pid"`
	TcpdumpPID    int    `json:"tcpdump_pid"`
	LinkType      string `json:"link_type"`
	Snaplen       uint32 `json:"snaplen"` // of the stream (the pcap header)
	PipelineTicks uint64 `json:"pipeline_ticks"`
	// PipelineTicksEnd is read once the live streams and servers ended (after the stop):
	// the readers' last bytes are in it.
	PipelineTicksEnd uint64  `json:"pipeline_ticks_end"`
	TcpdumpTicks     uint64  `json:"tcpdump_ticks"`
	Drained          bool    `json:"drained"`
	DrainMillis      int64   `json:"drain_ms"`
	CaptureSeconds   float64 `json:"capture_s"` // from Open to the stop
	Captured         uint64  `json:"captured"`  // tcpdump's final counters
	Received         uint64  `json:"received"`
	Dropped          uint64  `json:"dropped"`
	IfDropped        uint64  `json:"if_dropped"`
	PumpPackets      uint64  `json:"pump_packets"`
	PumpBytes        uint64  `json:"pump_bytes"`
	RingPackets      uint64  `json:"ring_packets"`
	RingBytes        uint64  `json:"ring_bytes"` // all bytes written to the ring's files, headers included
	RingRotations    uint64  `json:"ring_rotations"`
	Files            int     `json:"files"`
	FileBytes        int64   `json:"file_bytes"` // what the files left at the end hold
	EndedOnItsOwn    bool    `json:"ended_on_its_own"`
	Error            string  `json:"error,omitempty"`
	SourceCloseErr   string  `json:"source_close_error,omitempty"`
	RingCloseErr     string  `json:"ring_close_error,omitempty"`
	// Live streams (-stream-listen): readers that subscribed, were refused (over
	// -stream-max-readers), were cut off for falling behind (podcap_stream_readers_cut_total).
	StreamReaders int     `json:"stream_readers"`
	StreamRefused int     `json:"stream_refused"`
	StreamCut     float64 `json:"stream_cut"`
	// Metrics (-metrics-listen): scrapes served, and per-pod pushes done.
	MetricsScrapes int    `json:"metrics_scrapes"`
	StatsPushes    int    `json:"stats_pushes"`
	ServerError    string `json:"server_error,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.engine, "engine", "tcpdump", "capture engine: tcpdump or native")
	flag.IntVar(&o.pid, "pid", 0, "a process in the network namespace to capture (nsenter -t PID -n)")
	flag.StringVar(&o.netns, "netns", "", "network namespace file, when -pid is not given (nsenter --net=PATH)")
	flag.StringVar(&o.dir, "dir", "", "existing directory for the ring's files")
	flag.StringVar(&o.base, "base", capture.RingBase("bench"), "ring file name without index")
	flag.IntVar(&o.files, "files", 5, "ring size N")
	flag.Int64Var(&o.size, "size", capture.DefaultFileSize, "bytes per ring file")
	flag.IntVar(&o.snaplen, "snaplen", 0, "tcpdump -s; 0 means the agent's default (262144)")
	flag.StringVar(&o.filter, "filter", "", "BPF filter")
	flag.DurationVar(&o.drainPoll, "drain-poll", 100*time.Millisecond, "counter poll interval while draining")
	flag.DurationVar(&o.drainQuiet, "drain-quiet", 1500*time.Millisecond, "counters unchanged this long also end the drain")
	flag.DurationVar(&o.drainTimeout, "drain-timeout", 10*time.Second, "longest drain")
	flag.StringVar(&o.streamListen, "stream-listen", "", "serve the capture's live stream over HTTPS on this address (GET /api/v1/captures/"+benchNamespace+"/"+benchPod+"/stream)")
	flag.IntVar(&o.streamMaxReaders, "stream-max-readers", 10, "live readers allowed (per capture and in all)")
	flag.StringVar(&o.metricsListen, "metrics-listen", "", "serve an agent-like registry's /metrics over HTTP on this address")
	flag.DurationVar(&o.statsInterval, "stats-interval", 5*time.Second, "with -metrics-listen: how often the per-pod series are pushed (the Manager's StatsInterval)")
	klog.InitFlags(nil)
	flag.Parse()
	if o.dir == "" || (o.pid == 0 && o.netns == "") {
		fmt.Fprintln(os.Stderr, "pipeline: -dir and one of -pid, -netns are required")
		os.Exit(2)
	}
	if o.engine != "tcpdump" && o.engine != "native" {
		fmt.Fprintf(os.Stderr, "pipeline: -engine %q: want tcpdump or native\n", o.engine)
		os.Exit(2)
	}
	r, err := run(o)
	if err != nil {
		r.Error = err.Error()
	}
	if jerr := json.NewEncoder(os.Stdout).Encode(r); jerr != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", jerr)
		os.Exit(1)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipeline:", err)
		os.Exit(1)
	}
}

func run(o options) (result, error) {
	r := result{Engine: o.engine, PID: os.Getpid()}
	sig, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	eng, err := newEngine(o.engine, o.netns)
	if err != nil {
		return r, err
	}
	ring, err := capture.NewRing(capture.RingOptions{Dir: o.dir, Base: o.base, Files: o.files, FileSize: o.size})
	if err != nil {
		return r, err
	}
	// The capture's own context: a signal starts the drain, not the stop.
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), klog.Background()))
	defer cancel()

	// The registry, the live-stream hub and their servers, before the capture starts.
	var reg *prometheus.Registry
	var m *metrics.Metrics
	var scrapes atomic.Int64
	if o.metricsListen != "" {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		m = metrics.New(reg)
		metrics.RegisterAPITLS(reg, metrics.APITLSSelfSigned)
		m.InitCapture(benchNamespace, benchPod)
	}
	var streams *metrics.Streams
	if reg != nil {
		streams = metrics.NewStreams(reg)
	} else {
		streams = metrics.NewStreams(nil)
	}
	hub := capture.NewStreamHub(capture.StreamConfig{MaxReaders: o.streamMaxReaders,
		MaxReadersPerCapture: o.streamMaxReaders, Metrics: streams})
	bc := &benchCapture{hub: hub}
	srvCtx, stopServers := context.WithCancel(ctx)
	defer stopServers()
	var servers sync.WaitGroup
	var srvMu sync.Mutex
	var srvErrs []error
	serve := func(s *agent.Server, addr string) error {
		servers.Add(1)
		go func() {
			defer servers.Done()
			if err := s.Run(srvCtx); err != nil {
				srvMu.Lock()
				srvErrs = append(srvErrs, err)
				srvMu.Unlock()
			}
		}()
		return waitListening(addr, 5*time.Second)
	}
	if o.streamListen != "" {
		cert, err := agent.NewSelfSigned(agent.SelfSignedOptions{Hosts: []string{"127.0.0.1", "localhost"}})
		if err != nil {
			_ = ring.Close()
			return r, err
		}
		api, err := agent.NewAPIServer(o.streamListen, agent.APITransport{GetCertificate: cert.GetCertificate})
		if err != nil {
			_ = ring.Close()
			return r, err
		}
		if reg != nil {
			api.CountRequests(reg)
		}
		api.Handle("GET /api/v1/captures/{namespace}/{pod}/stream", agent.StreamHandler(bc))
		if err := serve(api, o.streamListen); err != nil {
			_ = ring.Close()
			return r, err
		}
	}
	if o.metricsListen != "" {
		g := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			scrapes.Add(1)
			return reg.Gather()
		})
		if err := serve(agent.NewMetricsServer(o.metricsListen, g, func() bool { return true }), o.metricsListen); err != nil {
			_ = ring.Close()
			return r, err
		}
	}

	t0 := time.Now()
	src, err := eng.Open(ctx, capture.Target{PID: o.pid, NetNSPath: o.netns},
		capture.SourceOptions{Snaplen: o.snaplen, Filter: o.filter})
	if err != nil {
		_ = ring.Close()
		return r, err
	}
	if p, ok := src.(interface{ PID() int }); ok {
		r.TcpdumpPID = p.PID()
	}
	r.LinkType, r.Snaplen = src.LinkType().String(), src.Snaplen()
	hub.SetFormat(src.LinkType(), src.Snaplen()) // as the Manager does before each capture process
	fmt.Fprintf(os.Stderr, "pipeline: ready pid=%d tcpdump_pid=%d\n", r.PID, r.TcpdumpPID)

	type pumped struct {
		st  capture.PumpStats
		err error
	}
	done := make(chan pumped, 1)
	ended := make(chan struct{})
	go func() {
		st, err := capture.Pump(ctx, src, ring, capture.PumpOptions{Tap: hub.Tap})
		done <- pumped{st, err}
		close(ended)
	}()
	// the Manager's periodic push of the per-pod series (refreshStats), until the drain
	pushCtx, stopPush := context.WithCancel(ctx)
	pushed := make(chan int, 1)
	go func() {
		n := 0
		defer func() { pushed <- n }()
		if m == nil {
			return
		}
		t := time.NewTicker(o.statsInterval)
		defer t.Stop()
		var last capture.RingCounts
		var drops uint64
		for {
			select {
			case <-pushCtx.Done():
				return
			case <-t.C:
			}
			src.RequestStats()
			if d := src.Stats().Dropped; d > drops {
				m.KernelDrops.WithLabelValues(benchNamespace, benchPod).Add(float64(d - drops))
				drops = d
			}
			c := ring.Counts()
			m.Packets.WithLabelValues(benchNamespace, benchPod).Add(float64(c.Packets - last.Packets))
			m.Bytes.WithLabelValues(benchNamespace, benchPod).Add(float64(c.Bytes - last.Bytes))
			m.FileRotations.WithLabelValues(benchNamespace, benchPod).Add(float64(c.Rotations - last.Rotations))
			last = c
			n++
		}
	}()

	var runErr error
	var p pumped
	select {
	case p = <-done: // tcpdump ended or the ring failed before we were asked to stop
		r.EndedOnItsOwn = true
		runErr = errors.New("capture ended before the stop signal")
		if p.err != nil {
			runErr = p.err
		}
		stopPush()
	case <-sig.Done():
		stopPush()
		d0 := time.Now()
		r.Drained = drain(src, ring, o.drainPoll, o.drainQuiet, o.drainTimeout, ended)
		r.DrainMillis = time.Since(d0).Milliseconds()
		r.PipelineTicks, _ = procTicks(r.PID)
		r.TcpdumpTicks, _ = procTicks(r.TcpdumpPID)
		cancel()
		p = <-done
		runErr = p.err
	}
	r.StatsPushes = <-pushed
	// the capture ended: its readers get what they hold, then the end of the stream
	hub.End()
	stopServers() // each server waits (up to 5 s) for its handlers: the streams' last bytes
	servers.Wait()
	r.PipelineTicksEnd, _ = procTicks(r.PID)
	r.StreamReaders, r.StreamRefused = int(bc.readers.Load()), int(bc.refused.Load())
	var cut dto.Metric
	if err := streams.Cut.Write(&cut); err == nil {
		r.StreamCut = cut.GetCounter().GetValue()
	}
	r.MetricsScrapes = int(scrapes.Load())
	if err := errors.Join(srvErrs...); err != nil {
		r.ServerError = err.Error()
	}
	r.CaptureSeconds = time.Since(t0).Seconds()
	if err := src.Close(); err != nil { // nil when we stopped a running tcpdump
		r.SourceCloseErr = err.Error()
		if runErr == nil {
			runErr = err
		}
	}
	st := src.Stats()
	r.Captured, r.Received, r.Dropped, r.IfDropped = st.Captured, st.Received, st.Dropped, st.IfDropped
	r.PumpPackets, r.PumpBytes = p.st.Packets, p.st.Bytes
	files := ring.Files()
	if err := ring.Close(); err != nil {
		r.RingCloseErr = err.Error()
		if runErr == nil {
			runErr = err
		}
	}
	c := ring.Counts()
	r.RingPackets, r.RingBytes, r.RingRotations = c.Packets, c.FileBytes, c.Rotations
	r.Files = len(files)
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			r.FileBytes += fi.Size()
		}
	}
	return r, runErr
}

// benchCapture is the one capture the stream route serves (agent.Retrieval): its
// Subscribe is the hub's, counted; nothing to list or download.
type benchCapture struct {
	hub              *capture.StreamHub
	readers, refused atomic.Int32
}

func (b *benchCapture) Captures(string) []capture.Listing { return nil }

func (b *benchCapture) OpenFile(string, string, string) (*capture.CaptureFile, error) {
	return nil, errors.New("no files here")
}

func (b *benchCapture) Subscribe(namespace, pod string) (*capture.Subscription, error) {
	if namespace != benchNamespace || pod != benchPod {
		return nil, capture.ErrCaptureNotRunning
	}
	s, err := b.hub.Subscribe()
	if err != nil {
		b.refused.Add(1)
		return nil, err
	}
	b.readers.Add(1)
	return s, nil
}

// waitListening returns once addr accepts a TCP connection, or an error after timeout.
func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newEngine returns the engine named by -engine, with the agent's defaults; a -netns file
// must lie in its directory, as a pod's pinned namespace lies in the runtime's.
func newEngine(name, netnsPath string) (capture.Engine, error) {
	dir := ""
	if netnsPath != "" {
		dir = filepath.Dir(netnsPath)
	}
	if name == "native" {
		return native.New(native.Config{NetNSDir: dir})
	}
	return tcpdump.New(tcpdump.Config{NetNSDir: dir})
}

// drain waits until the capture has caught up with the traffic that was sent: every packet
// the capture socket received is either captured or counted as dropped (captured+dropped >=
// received), or the counters did not move for quiet (packets left in a socket buffer block
// that the kernel never hands on), and the ring holds every packet the engine captured. It
// returns false if that did not happen within timeout or the capture ended meanwhile.
func drain(src capture.Source, ring *capture.Ring, poll, quiet, timeout time.Duration, ended <-chan struct{}) bool {
	deadline := time.Now().Add(timeout)
	var last capture.Stats
	lastChange := time.Now()
	for time.Now().Before(deadline) {
		src.RequestStats()
		select {
		case <-ended:
			return false
		case <-time.After(poll):
		}
		st := src.Stats()
		if st != last {
			last, lastChange = st, time.Now()
		}
		written := ring.Counts().Packets
		accounted := st.Captured+st.Dropped >= st.Received || time.Since(lastChange) >= quiet
		if st.Received > 0 && accounted && written >= st.Captured {
			return true
		}
	}
	return false
}

// procTicks returns utime+stime of pid from /proc/PID/stat, in clock ticks.
func procTicks(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d", pid)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// the command name (field 2) may contain spaces and parentheses: split after the last ')'
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime and stime are fields 14 and 15
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return u + st, nil
}
