package alerts

import "context"

// Recorder records a notification's alerts where every agent sees them (the API server's
// CaptureAlert objects: [Store]). The webhook answers 200 only once Record returned nil.
type Recorder interface {
	// Record records every alert of n, creating or updating one object per fingerprint
	// (idempotent: the same notification twice is the same objects). An alert over the
	// bound of active alerts is refused, counted in Recorded.Refused and not an error:
	// Alertmanager cannot do better by sending it again. An error is transient (the API
	// server did not answer): the webhook answers 503 and Alertmanager retries.
	Record(ctx context.Context, n Notification) (Recorded, error)
}

// Recorded is what Record did with a notification's alerts.
type Recorded struct {
	Recorded int // alerts created or updated
	Refused  int // firing alerts refused: the bound of active alerts was reached
}
