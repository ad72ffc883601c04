package native

import (
	"fmt"
	"time"

	"github.com/podcap/podcap/agent/capture/netns"
)

// Defaults of Config.
const (
	// DefaultRingBytes is the kernel ring of one capture: 32 MiB kept a full-snaplen 17 Gbit/s
	// TCP stream between two namespaces at 0% drops (capture-bench).
	DefaultRingBytes = 32 << 20
	// DefaultBlockTimeout is how long the kernel fills a ring block before it hands it over
	// however full: the latency of a packet on a quiet link.
	DefaultBlockTimeout = 10 * time.Millisecond
	DefaultTcpdump      = "tcpdump"
)

// Bounds of Config.
const (
	MinRingBytes    = 1 << 20
	MaxRingBytes    = 1 << 30
	MaxBlockTimeout = 10 * time.Millisecond // the first packet must reach disk as fast as with tcpdump
)

// Config configures the engine. Zero values mean the defaults.
type Config struct {
	// NetNSDir is the only directory whose network namespace files (Target.NetNSPath) the
	// engine opens (package netns).
	NetNSDir string
	// RingBytes is the size of each capture's kernel ring, rounded down to whole blocks.
	RingBytes int
	// BlockTimeout: see DefaultBlockTimeout; whole milliseconds, 1 to MaxBlockTimeout.
	BlockTimeout time.Duration
	// TcpdumpPath is the tcpdump that compiles filters (`tcpdump -ddd`, no capture, no
	// privilege); a name is looked up in $PATH by New. Only needed for filters.
	TcpdumpPath string
}

func (c Config) withDefaults() Config {
	if c.NetNSDir == "" {
		c.NetNSDir = netns.DefaultDir
	}
	if c.RingBytes == 0 {
		c.RingBytes = DefaultRingBytes
	}
	if c.BlockTimeout == 0 {
		c.BlockTimeout = DefaultBlockTimeout
	}
	if c.TcpdumpPath == "" {
		c.TcpdumpPath = DefaultTcpdump
	}
	return c
}

func (c Config) validate() error {
	if c.RingBytes < MinRingBytes || c.RingBytes > MaxRingBytes {
		return fmt.Errorf("ring size %d bytes: must be from %d to %d", c.RingBytes, MinRingBytes, MaxRingBytes)
	}
	if c.BlockTimeout < time.Millisecond || c.BlockTimeout > MaxBlockTimeout || c.BlockTimeout%time.Millisecond != 0 {
		return fmt.Errorf("block timeout %v: must be whole milliseconds from 1ms to %v", c.BlockTimeout, MaxBlockTimeout)
	}
	return nil
}
