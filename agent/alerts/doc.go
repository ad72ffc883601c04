// Package alerts is podcap's side of Alertmanager: the authenticated webhook that receives
// notifications ([Webhook], POST /api/v1/alerts), the decoding of their payload, and the
// [Store] that records every alert as a CaptureAlert object in the API server and serves the
// active ones, from an informer, to the policy's input.alerts on every agent (store.go says
// how, with its bounds). The webhook answers 200 only once the store recorded the
// notification ([Recorder]).
//
// Decoding turns the webhook payload (version "4") into the project's own small types,
// [Notification] and [Alert], so that no Alertmanager struct leaks into the rest of the agent.
//
// [Decode] is strict about what podcap needs (the version, and for every alert its
// fingerprint, status, labels and start time) and tolerant of what it does not (groupLabels,
// commonLabels, commonAnnotations, externalURL and any field a later Alertmanager adds).
// Everything it keeps is bounded by [Limits]: the body, the alerts per notification, the
// labels and annotations per alert and the size of their names and values. Its errors are
// meant for an HTTP handler:
//
//   - [ErrTooLarge]: the body exceeds [Limits.MaxBodyBytes]; answer 413.
//   - [ErrInvalid] (and [ErrVersion], which wraps it): malformed JSON, a version other than
//     "4", a missing or out-of-bounds field; answer 400 with the error's text, which names
//     the field and the alert's index (a JSON type error, from encoding/json, gives the
//     field's path and byte offset instead of the index). The text never echoes more than
//     64 bytes of a field.
//   - anything else is the reader's own error (the client went away); not the sender's fault.
//
// Alertmanager does not retry a notification answered with a 4xx, so every bound here is
// generous for real alerts; the webhook receiver's `max_alerts` should be set to at most
// [Limits.MaxAlerts] so that Alertmanager truncates a large group itself (and says so in
// truncatedAlerts) instead of podcap refusing all of it.
//
// A group's status is "firing" as long as any of its alerts fires, so callers act on each
// alert's own status: [Alert.Active].
package alerts
