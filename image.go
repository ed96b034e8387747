package sluice

import (
	"context"
	"io"
)

// ImageRequest is a request to generate images, in the shape of OpenAI's
// images API. The gateway has validated it and filled in the defaults.
type ImageRequest struct {
	Model          string `json:"model"`
	Prompt         string `json:"prompt"`
	N              int    `json:"n"`
	Size           string `json:"size"`            // "WxH"
	ResponseFormat string `json:"response_format"` // "b64_json"
	User           string `json:"user,omitempty"`
}

// ImageResult is a successful answer of an ImageGenerator: a JSON body in
// the shape of OpenAI's images API ({"created":…,"data":[{"b64_json":…}]}),
// which the gateway streams to its client. The caller must close Body.
type ImageResult struct {
	Body        io.ReadCloser
	ContentType string
}

// ImageGenerator generates images: the built-in demo generator or an
// OpenAI-compatible upstream. Implementations are safe for concurrent use.
//
// An error means nothing was delivered (connection error, timeout, a non-2xx
// answer), so the units charged for the request are refunded; it is an
// *Error with code EUPSTREAM for failures of the upstream.
type ImageGenerator interface {
	Generate(ctx context.Context, req *ImageRequest) (*ImageResult, error)
}

// QuotaService decides requests for units at the current time, applying the
// deployment's mode (enforce or shadow) and failure policy on top of a
// QuotaStore. An error means no decision could be made (an *Error with code
// EUNAVAILABLE when the store is unreachable and the policy is fail-closed).
type QuotaService interface {
	Take(ctx context.Context, key string, p *Policy, n int64) (Decision, error)
	Refund(ctx context.Context, key string, p *Policy, n int64, at Decision) error
	Peek(ctx context.Context, key string, p *Policy) (Decision, error)
	Reset(ctx context.Context, key string) error
	// Ping reports whether the store behind the service is reachable.
	Ping(ctx context.Context) error
}

// QuotaSyncer is a QuotaStore or QuotaService whose charges live in memory
// for a while before a crash can no longer lose them (the embedded store,
// which writes its counters to disk every flush interval). Sync returns
// once the counters of key, as they stand, would survive a crash of the
// process.
//
// A charge that another record builds on (an idempotency claim's, a
// journaled Telegram prompt's, which a retry or another instance inherits
// instead of charging again) is recorded only after Sync: a crash then
// either loses both, and the retry pays once, or keeps both.
type QuotaSyncer interface {
	Sync(ctx context.Context, key string) error
}

// SyncQuota calls q's Sync if q is a QuotaSyncer; otherwise every charge
// already survives what q survives, and it returns nil.
func SyncQuota(ctx context.Context, q QuotaService, key string) error {
	if s, ok := q.(QuotaSyncer); ok {
		return s.Sync(ctx, key)
	}
	return nil
}
