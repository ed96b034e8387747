package sluice

import (
	"context"
	"crypto/sha256"
	"time"
)

// Idempotency (CONTRACT.md §9): a keyed request whose answer was a 200 is
// answered again, byte for byte and without a charge, when it is retried with
// the same Idempotency-Key.

// Bounds of an Idempotency-Key.
const (
	MaxIdempotencyKey = 255 // bytes, each printable ASCII
)

// Defaults of the idempotency settings (limits.idempotency_ttl,
// limits.idempotency_max_body).
const (
	DefaultIdempotencyTTL = 24 * time.Hour
	// DefaultIdempotencyMaxBody holds the answer of n=4 large images: four
	// PNGs of up to 6 MiB each (8 MiB each in base64). A 1024x1024 PNG of
	// an upstream such as OpenAI's is typically 1.5-3 MiB; the demo
	// generator's 2048x2048 is 120 KB.
	DefaultIdempotencyMaxBody = 32 << 20
)

// ValidIdempotencyKey reports whether k is 1 to MaxIdempotencyKey printable
// ASCII characters (0x20 to 0x7e), as CONTRACT.md §9 requires.
func ValidIdempotencyKey(k string) bool {
	if len(k) < 1 || len(k) > MaxIdempotencyKey {
		return false
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// Fingerprint identifies a request for idempotency: two requests with one
// key are "the same request" if and only if their fingerprints are equal.
type Fingerprint [sha256.Size]byte

// NewFingerprint returns the fingerprint of a request: the SHA-256 of its
// method, its route and the SHA-256 of its body. route is the path of the
// operation with the API family's prefix removed, so that the same request
// sent under /v1/ and under /openai/v1/ has one fingerprint (both families
// answer a 200 with the same body).
func NewFingerprint(method, route string, bodySum [sha256.Size]byte) Fingerprint {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(route))
	h.Write([]byte{0})
	h.Write(bodySum[:])
	var f Fingerprint
	h.Sum(f[:0])
	return f
}

// IdempotencyRecord is what an IdempotencyStore keeps for one key of one
// account: either a claim in flight (Done false), held by the attempt whose
// Token it carries until ExpiresAt (its lease), or a kept answer (Done true),
// replayed until ExpiresAt.
type IdempotencyRecord struct {
	AccountID   int64
	Key         string
	Fingerprint Fingerprint
	// Token names the attempt that claimed the key; only it may Complete
	// or Abandon the claim. Random, so that an attempt whose lease ran out
	// and was taken over cannot touch its successor's claim.
	Token string
	Done  bool
	// The kept answer, when Done.
	Status      int
	ContentType string
	Body        []byte
	// Oversize, when Done, reports that the answer was larger than the
	// bound on what is kept, so its body was not kept (Body is empty):
	// the request was served and charged, but cannot be replayed.
	Oversize  bool
	ExpiresAt time.Time
	// Charged, on a claim in flight, is the units its attempt took from
	// the account's quota, at the instant ChargedAt (the decision's Time,
	// which a refund names), as recorded by Charge once they were taken.
	// Until ChargedUntil, a Begin of the same request that takes over the
	// expired claim (its instance stopped before answering) inherits the
	// charge: the retry is served on it and not charged again. 0 when the
	// attempt has charged nothing (yet).
	Charged      int64
	ChargedAt    time.Time
	ChargedUntil time.Time
}

// IdempotencyStore keeps the claims and answers of keyed requests, shared by
// every gateway instance that shares the account store. Implementations are
// safe for concurrent use, and their claims are atomic across instances: of
// any number of concurrent Begins with one account and key, at most one
// claims it. A record with ExpiresAt <= now does not exist for Begin (an
// expired lease may be taken over; an expired answer is forgotten).
type IdempotencyStore interface {
	// Begin claims the key of rec (AccountID, Key) for the attempt named by
	// rec.Token with rec.Fingerprint, in flight until rec.ExpiresAt, unless
	// a record that has not expired at now holds it. It returns claimed
	// true and rec as stored, or claimed false and the record that holds
	// the key (in flight, or done with its answer; its fingerprint may
	// differ from rec's, which the caller must check).
	//
	// An expired claim in flight whose charge holds (ChargedUntil after
	// now) is taken over only by the same request (rec.Fingerprint), and
	// the new claim inherits its Charged, ChargedAt and ChargedUntil; for
	// another request it holds the key as an unexpired one does.
	Begin(ctx context.Context, rec *IdempotencyRecord, now time.Time) (got *IdempotencyRecord, claimed bool, err error)

	// Charge records on the claim in flight of the attempt token that it
	// took units from the quota at the instant at, to be inherited until
	// until (see Begin). It is an *Error with code ENOTFOUND if the attempt
	// no longer holds a claim in flight.
	Charge(ctx context.Context, accountID int64, key, token string, units int64, at, until time.Time) error

	// Complete turns the claim of the attempt rec.Token on (rec.AccountID,
	// rec.Key) into a kept answer: rec.Status, rec.ContentType, rec.Body
	// and rec.Oversize, replayed until rec.ExpiresAt (the fingerprint is
	// the claim's). It is an *Error with code ENOTFOUND if the attempt no
	// longer holds the claim (its lease ran out and another took over, or
	// it completed or abandoned it already).
	Complete(ctx context.Context, rec *IdempotencyRecord) error

	// Extend moves the end of the lease of the attempt token's claim in
	// flight to expires: a request still being served renews its claim so
	// that it is never taken over, while the claim of a crashed instance
	// ends soon. It is an *Error with code ENOTFOUND if the attempt no
	// longer holds a claim in flight.
	Extend(ctx context.Context, accountID int64, key, token string, expires time.Time) error

	// Abandon deletes the claim of the attempt token, so that the next
	// request with the key is a new attempt. A claim the attempt no
	// longer holds, and a done record, are left alone (no error).
	Abandon(ctx context.Context, accountID int64, key, token string) error

	// DeleteExpired deletes the records (answers and leases) that have
	// expired at now, but for claims whose charge holds (ChargedUntil after
	// now), and returns how many. Begin already ignores them; this bounds
	// the store's size.
	DeleteExpired(ctx context.Context, now time.Time) (int64, error)
}
