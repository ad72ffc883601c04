package capture

import (
	"time"

	"github.com/podcap/podcap/agent/metrics"
	"k8s.io/utils/clock"
)

// Config is what a Manager needs; zero durations take the defaults.
type Config struct {
	Dir           string // base capture directory; captures live in Dir/<namespace>/<pod>/
	MaxConcurrent int    // captures running at once; the excess waits in a queue
	// Engines open the captures, by name (EngineTcpdump, EngineNative): a Spec runs on the
	// one its Engine names, "" on DefaultEngine (default EngineTcpdump), which must be here.
	Engines       map[string]Engine
	DefaultEngine string
	// EngineErrors say why an engine is missing from Engines on this node (the native
	// engine could not be built): Ensure refuses a Spec naming it with ErrEngineUnavailable
	// wrapping that error.
	EngineErrors map[string]error
	// NativeRingBytes is the kernel ring of each capture on EngineNative
	// (--native-buffer-bytes). The rings of the native captures holding a slot stay under
	// NativeRingBudget (--native-buffer-budget, at least NativeRingBytes): a native capture
	// that does not fit waits in the queue like one over the byte budget. Both are required
	// with a native engine.
	NativeRingBytes  int64
	NativeRingBudget int64
	Resolver         Resolver
	Notifier         Notifier
	Metrics          *metrics.Metrics
	Clock            clock.WithTickerAndDelayedExecution // every timer and tick (tests step a fake one)

	// Retention bounds what capture files keep; its MaxBytes is the node's byte budget of
	// all capture files, running captures' worst case included (see Ensure).
	Retention Retention
	// MinFreeBytes is the free space a ring leaves on the capture directory's file system:
	// a ring file that could take it under this is not created, and the capture fails (its
	// files kept) until space is back.
	MinFreeBytes int64
	// Streams bounds the live stream readers (Subscribe).
	Streams StreamConfig
	// NodeName and Version (the agent's) are written in the section header of pcapng files.
	NodeName, Version string
	StatsInterval     time.Duration // how often kernel counters are asked for (default 5s)
	RecheckInterval   time.Duration // how often a running capture checks the pod's PID (default 30s)
	MinBackoff        time.Duration // first delay after a failure (default 1s)
	MaxBackoff        time.Duration // delay cap, and the run time after which backoff resets (default 30s)
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = 5 * time.Second
	}
	if c.RecheckInterval == 0 {
		c.RecheckInterval = 30 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 1
	}
	if c.DefaultEngine == "" {
		c.DefaultEngine = EngineTcpdump
	}
	c.Retention.setDefaults()
}
