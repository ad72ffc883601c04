package policy

import (
	"context"
	"time"
)

// Run polls the policy directory every PollInterval and reloads when what it reads changes,
// until ctx ends. Polling a content hash, rather than inotify, sees every way the files
// change with one mechanism: the kubelet's atomic swap of the ..data symbolic link of a
// ConfigMap volume (a new target directory, no event on the files themselves), files edited
// in place, replaced by rename, added or removed. Reading a few kilobytes every 2 s costs
// nothing next to the kubelet's own ConfigMap sync delay (a minute or so).
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_ = e.reload(false) // logged and in Status; the active policy stays
		}
	}
}
