//go:build !linux

package native

import (
	"context"
	"errors"

	"github.com/podcap/podcap/agent/capture"
)

var _ capture.Engine = (*Engine)(nil)

// ErrUnsupported is returned on systems without AF_PACKET and network namespaces.
var ErrUnsupported = errors.New("native capture engine: needs Linux (AF_PACKET, network namespaces)")

// Engine is the Linux engine's stand-in elsewhere; it opens nothing.
type Engine struct{}

// New returns ErrUnsupported.
func New(Config) (*Engine, error) { return nil, ErrUnsupported }

// Open returns ErrUnsupported.
func (*Engine) Open(context.Context, capture.Target, capture.SourceOptions) (capture.Source, error) {
	return nil, ErrUnsupported
}
