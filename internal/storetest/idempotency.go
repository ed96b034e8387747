package storetest

import (
	"bytes"
	"crypto/sha256"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	sluice "github.com/sluicehq/sluice"
)

// RunIdempotencyStore runs the conformance suite of sluice.IdempotencyStore.
// Every call of open must return a new, empty store and a function that
// opens another handle on the same data (as a second gateway instance
// would: a second connection pool, a second open of the file), closed when
// the test ends. Subtests run one after another.
//
// The suite's clock is a parameter: it steps through leases and TTLs
// without sleeping.
func RunIdempotencyStore(t *testing.T, open func(t *testing.T) (s sluice.IdempotencyStore, another func() sluice.IdempotencyStore)) {
	one := func(t *testing.T) sluice.IdempotencyStore { s, _ := open(t); return s }
	t.Run("Lifecycle", func(t *testing.T) { testIdemLifecycle(t, one(t)) })
	t.Run("LeaseTakeover", func(t *testing.T) { testIdemLeaseTakeover(t, one(t)) })
	t.Run("Abandon", func(t *testing.T) { testIdemAbandon(t, one(t)) })
	t.Run("Extend", func(t *testing.T) { testIdemExtend(t, one(t)) })
	t.Run("AnswerExpires", func(t *testing.T) { testIdemAnswerExpires(t, one(t)) })
	t.Run("ScopeIsTheAccount", func(t *testing.T) { testIdemScope(t, one(t)) })
	t.Run("Oversize", func(t *testing.T) { testIdemOversize(t, one(t)) })
	t.Run("LargeBody", func(t *testing.T) { testIdemLargeBody(t, one(t)) })
	t.Run("DeleteExpired", func(t *testing.T) { testIdemDeleteExpired(t, one(t)) })
	t.Run("ChargeInherited", func(t *testing.T) { testIdemChargeInherited(t, one(t)) })
	t.Run("ChargeKept", func(t *testing.T) { testIdemChargeKept(t, one(t)) })
	t.Run("BeginConcurrent", func(t *testing.T) {
		s, another := open(t)
		testIdemBeginConcurrent(t, s, another())
	})
}

// Lease and TTL of the suite's records.
const (
	idemLease = time.Minute
	idemTTL   = 24 * time.Hour
)

func fingerprint(body string) sluice.Fingerprint {
	return sluice.NewFingerprint("POST", "/v1/images/generations", sha256.Sum256([]byte(body)))
}

// claim is a record for Begin: account, key, the body's fingerprint, a new
// token, in flight until now + idemLease.
func claim(account int64, key, body string, now time.Time) *sluice.IdempotencyRecord {
	return &sluice.IdempotencyRecord{AccountID: account, Key: key, Fingerprint: fingerprint(body),
		Token: sluice.RandomString(16), ExpiresAt: now.Add(idemLease)}
}

// begin calls Begin and fails the test on an error or if claimed is not
// wantClaimed.
func begin(t *testing.T, s sluice.IdempotencyStore, rec *sluice.IdempotencyRecord, now time.Time, wantClaimed bool) *sluice.IdempotencyRecord {
	t.Helper()
	got, claimed, err := s.Begin(t.Context(), rec, now)
	if err != nil {
		t.Fatalf("Begin(%d, %q): %v", rec.AccountID, rec.Key, err)
	}
	if claimed != wantClaimed {
		t.Fatalf("Begin(%d, %q) claimed = %v, want %v (record %+v)", rec.AccountID, rec.Key, claimed, wantClaimed, got)
	}
	return got
}

// done is the answer that completes c.
func done(c *sluice.IdempotencyRecord, body string, now time.Time) *sluice.IdempotencyRecord {
	d := *c
	d.Done, d.Status, d.ContentType, d.Body, d.ExpiresAt = true, 200, "application/json", []byte(body), now.Add(idemTTL)
	return &d
}

func complete(t *testing.T, s sluice.IdempotencyStore, rec *sluice.IdempotencyRecord) {
	t.Helper()
	if err := s.Complete(t.Context(), rec); err != nil {
		t.Fatalf("Complete(%d, %q): %v", rec.AccountID, rec.Key, err)
	}
}

// equateBodies treats a nil and an empty body alike.
var equateBodies = cmp.Comparer(func(x, y []byte) bool { return bytes.Equal(x, y) })

func wantRecord(t *testing.T, op string, want, got *sluice.IdempotencyRecord) {
	t.Helper()
	if diff := cmp.Diff(want, got, equateTimes, equateBodies); diff != "" {
		t.Errorf("%s (-want +got):\n%s", op, diff)
	}
}

func testIdemLifecycle(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	c := claim(1, "k-1", `{"prompt":"a"}`, now)
	got := begin(t, s, c, now, true)
	wantRecord(t, "Begin (claimed)", c, got)

	// In flight: the same request, and another, see the claim.
	again := claim(1, "k-1", `{"prompt":"a"}`, now.Add(time.Second))
	wantRecord(t, "Begin while in flight", c, begin(t, s, again, now.Add(time.Second), false))
	other := claim(1, "k-1", `{"prompt":"b"}`, now.Add(time.Second))
	wantRecord(t, "Begin with another body while in flight", c, begin(t, s, other, now.Add(time.Second), false))

	// Only the claim's attempt may complete it.
	stranger := done(c, "stolen", now)
	stranger.Token = again.Token
	wantCode(t, "Complete by another attempt", s.Complete(ctx, stranger), sluice.ENOTFOUND)

	answer := `{"created":1,"data":[{"b64_json":"iVBORw0KGgo="}]}` + "\n"
	d := done(c, answer, now.Add(2*time.Second))
	complete(t, s, d)
	wantCode(t, "Complete twice", s.Complete(ctx, d), sluice.ENOTFOUND)

	// Done: replayed as kept, to the same request and another alike (the
	// caller compares fingerprints).
	wantRecord(t, "Begin after Complete", d, begin(t, s, claim(1, "k-1", `{"prompt":"a"}`, now.Add(3*time.Second)), now.Add(3*time.Second), false))
	wantRecord(t, "Begin with another body after Complete", d, begin(t, s, claim(1, "k-1", `{"prompt":"b"}`, now.Add(3*time.Second)), now.Add(3*time.Second), false))
	// Abandon does not touch a kept answer.
	if err := s.Abandon(ctx, 1, "k-1", c.Token); err != nil {
		t.Fatalf("Abandon of a done record: %v", err)
	}
	wantRecord(t, "Begin after Abandon of a done record", d, begin(t, s, claim(1, "k-1", `{"prompt":"a"}`, now.Add(4*time.Second)), now.Add(4*time.Second), false))
}

func testIdemLeaseTakeover(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	first := claim(1, "crashed", "x", now)
	begin(t, s, first, now, true)

	// One second before the lease ends the claim holds; at its end (the
	// first instance crashed) another attempt takes over.
	end := now.Add(idemLease)
	begin(t, s, claim(1, "crashed", "x", end.Add(-time.Second)), end.Add(-time.Second), false)
	second := claim(1, "crashed", "x", end)
	wantRecord(t, "Begin at the lease's end", second, begin(t, s, second, end, true))

	// The first attempt, back from the dead, can neither complete nor
	// abandon its successor's claim.
	wantCode(t, "Complete by the attempt whose lease ran out", s.Complete(ctx, done(first, "late", end)), sluice.ENOTFOUND)
	if err := s.Abandon(ctx, 1, "crashed", first.Token); err != nil {
		t.Fatalf("Abandon by the attempt whose lease ran out: %v", err)
	}
	wantRecord(t, "Begin after the stale Abandon", second, begin(t, s, claim(1, "crashed", "x", end), end.Add(time.Second), false))
	complete(t, s, done(second, "ok", end.Add(time.Second)))
}

func testIdemExtend(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	c := claim(1, "long", "x", now)
	begin(t, s, c, now, true)
	// Renewed a minute on, the claim holds past its first lease.
	if err := s.Extend(ctx, 1, "long", c.Token, now.Add(2*idemLease)); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	want := *c
	want.ExpiresAt = now.Add(2 * idemLease)
	wantRecord(t, "Begin after the first lease's end", &want, begin(t, s, claim(1, "long", "x", now), now.Add(idemLease), false))
	wantCode(t, "Extend by another attempt", s.Extend(ctx, 1, "long", "stranger", now.Add(3*idemLease)), sluice.ENOTFOUND)
	wantCode(t, "Extend of a key never claimed", s.Extend(ctx, 1, "nothing", c.Token, now.Add(3*idemLease)), sluice.ENOTFOUND)
	// At the renewed lease's end another attempt takes over; the first can
	// no longer renew.
	second := claim(1, "long", "x", now.Add(2*idemLease))
	begin(t, s, second, now.Add(2*idemLease), true)
	wantCode(t, "Extend after a takeover", s.Extend(ctx, 1, "long", c.Token, now.Add(4*idemLease)), sluice.ENOTFOUND)
	// A done record is not a claim in flight.
	complete(t, s, done(second, "ok", now.Add(2*idemLease)))
	wantCode(t, "Extend of a done record", s.Extend(ctx, 1, "long", second.Token, now.Add(4*idemLease)), sluice.ENOTFOUND)
}

func testIdemAbandon(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	first := claim(7, "retry-me", "x", now)
	begin(t, s, first, now, true)
	if err := s.Abandon(ctx, 7, "retry-me", first.Token); err != nil {
		t.Fatalf("Abandon: %v", err)
	}
	// A retry is a new attempt, even with another body.
	second := claim(7, "retry-me", "y", now)
	wantRecord(t, "Begin after Abandon", second, begin(t, s, second, now, true))
	if err := s.Abandon(ctx, 7, "retry-me", "not-the-token"); err != nil {
		t.Fatalf("Abandon by a stranger: %v", err)
	}
	begin(t, s, claim(7, "retry-me", "y", now), now, false)
	if err := s.Abandon(ctx, 7, "never-claimed", "t"); err != nil {
		t.Fatalf("Abandon of a key never claimed: %v", err)
	}
}

func testIdemAnswerExpires(t *testing.T, s sluice.IdempotencyStore) {
	now := wholeSecondNow()
	c := claim(1, "old", "x", now)
	begin(t, s, c, now, true)
	d := done(c, "answer", now)
	complete(t, s, d)
	// Kept until the TTL's end, forgotten at it.
	begin(t, s, claim(1, "old", "x", now), d.ExpiresAt.Add(-time.Second), false)
	fresh := claim(1, "old", "other", d.ExpiresAt)
	wantRecord(t, "Begin once the answer expired", fresh, begin(t, s, fresh, d.ExpiresAt, true))
}

func testIdemScope(t *testing.T, s sluice.IdempotencyStore) {
	now := wholeSecondNow()
	a := claim(1, "shared-key", "x", now)
	b := claim(2, "shared-key", "x", now)
	begin(t, s, a, now, true)
	begin(t, s, b, now, true)
	complete(t, s, done(a, "for account 1", now))
	wantRecord(t, "account 2's claim", b, begin(t, s, claim(2, "shared-key", "x", now), now, false))
	// Keys are compared exactly: case and spaces matter.
	begin(t, s, claim(1, "Shared-Key", "x", now), now, true)
	begin(t, s, claim(1, " shared-key", "x", now), now, true)
}

func testIdemOversize(t *testing.T, s sluice.IdempotencyStore) {
	now := wholeSecondNow()
	c := claim(1, "big", "x", now)
	begin(t, s, c, now, true)
	d := done(c, "partial body that must not be kept", now)
	d.Oversize = true
	complete(t, s, d)
	want := *d
	want.Body = nil
	wantRecord(t, "Begin after an oversize answer", &want, begin(t, s, claim(1, "big", "x", now), now, false))
}

func testIdemLargeBody(t *testing.T, s sluice.IdempotencyStore) {
	now := wholeSecondNow()
	body := make([]byte, 6<<20)
	for i := range body {
		body[i] = byte(i*7 + i>>9)
	}
	c := claim(1, "large", "x", now)
	begin(t, s, c, now, true)
	d := done(c, "", now)
	d.Body, d.ContentType = body, "application/json; charset=utf-8"
	complete(t, s, d)
	got := begin(t, s, claim(1, "large", "x", now), now, false)
	if !bytes.Equal(got.Body, body) {
		t.Fatalf("kept body of %d bytes differs from the %d bytes completed", len(got.Body), len(body))
	}
	if got.ContentType != d.ContentType || got.Status != 200 || !got.Done {
		t.Errorf("kept answer = status %d, type %q, done %v", got.Status, got.ContentType, got.Done)
	}
}

func testIdemDeleteExpired(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	// Leases and answers that end an hour ago, now, and in an hour.
	for i, end := range []time.Time{now.Add(-time.Hour), now, now.Add(time.Hour)} {
		c := claim(1, "lease-"+strconv.Itoa(i), "x", now)
		c.ExpiresAt = end
		begin(t, s, c, end.Add(-2*time.Hour), true)
		a := claim(1, "answer-"+strconv.Itoa(i), "x", now)
		begin(t, s, a, end.Add(-2*time.Hour), true)
		d := done(a, "body", now)
		d.ExpiresAt = end
		complete(t, s, d)
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != 4 {
		t.Fatalf("DeleteExpired = %d, %v; want 4", n, err)
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != 0 {
		t.Fatalf("DeleteExpired again = %d, %v; want 0", n, err)
	}
	// What has not expired is still there.
	begin(t, s, claim(1, "lease-2", "x", now), now, false)
	if got := begin(t, s, claim(1, "answer-2", "x", now), now, false); !got.Done {
		t.Errorf("answer-2 after DeleteExpired = %+v, want its kept answer", got)
	}
	// More than one batch.
	const many = 2500
	for i := range many {
		begin(t, s, claim(3, "m-"+strconv.Itoa(i), "x", now.Add(-2*idemLease)), now.Add(-2*idemLease), true)
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != many {
		t.Fatalf("DeleteExpired of %d = %d, %v", many, n, err)
	}
}

// chargeClaim records on c that its attempt took units at at, inheritable for
// idemTTL, and returns c as Begin would show it then.
func chargeClaim(t *testing.T, s sluice.IdempotencyStore, c *sluice.IdempotencyRecord, units int64, at time.Time) *sluice.IdempotencyRecord {
	t.Helper()
	if err := s.Charge(t.Context(), c.AccountID, c.Key, c.Token, units, at, at.Add(idemTTL)); err != nil {
		t.Fatalf("Charge(%d, %q): %v", c.AccountID, c.Key, err)
	}
	charged := *c
	charged.Charged, charged.ChargedAt, charged.ChargedUntil = units, at, at.Add(idemTTL)
	return &charged
}

// testIdemChargeInherited: the charge of a claim whose instance stopped is
// inherited by the same request taking it over, and holds the key against
// another request.
func testIdemChargeInherited(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	first := claim(1, "charged", "x", now)
	begin(t, s, first, now, true)
	charged := chargeClaim(t, s, first, 2, now.Add(time.Second))
	// In flight, the charge shows.
	wantRecord(t, "Begin while the charged claim is in flight", charged, begin(t, s, claim(1, "charged", "x", now), now.Add(2*time.Second), false))

	// The lease ends (the instance died): another request with the key
	// does not take it over, the same one does and inherits the charge.
	end := now.Add(idemLease)
	wantRecord(t, "Begin with another body after the lease", charged, begin(t, s, claim(1, "charged", "y", end), end, false))
	second := claim(1, "charged", "x", end)
	want := *second
	want.Charged, want.ChargedAt, want.ChargedUntil = 2, now.Add(time.Second), now.Add(time.Second+idemTTL)
	wantRecord(t, "Begin of the same request after the lease", &want, begin(t, s, second, end, true))

	// The dead attempt can charge its claim no more.
	wantCode(t, "Charge by the attempt whose lease ran out", s.Charge(ctx, 1, "charged", first.Token, 5, end, end.Add(idemTTL)), sluice.ENOTFOUND)
	wantCode(t, "Charge of a key never claimed", s.Charge(ctx, 1, "nothing", first.Token, 1, end, end.Add(idemTTL)), sluice.ENOTFOUND)

	// The successor dies too: the charge passes on again.
	end2 := end.Add(idemLease)
	third := claim(1, "charged", "x", end2)
	want3 := *third
	want3.Charged, want3.ChargedAt, want3.ChargedUntil = want.Charged, want.ChargedAt, want.ChargedUntil
	wantRecord(t, "Begin after a second lease", &want3, begin(t, s, third, end2, true))

	// Completed, the record is an answer: no charge to inherit once it
	// expires, and the key is free for any request.
	d := done(third, "ok", end2)
	d.Charged, d.ChargedAt, d.ChargedUntil = 0, time.Time{}, time.Time{}
	complete(t, s, d)
	wantRecord(t, "Begin after Complete", d, begin(t, s, claim(1, "charged", "x", end2), end2.Add(time.Second), false))
	later := d.ExpiresAt
	fresh := claim(1, "charged", "y", later)
	wantRecord(t, "Begin of another request after the answer expired", fresh, begin(t, s, fresh, later, true))

	// An abandoned claim takes its charge with it (the caller refunds).
	a := claim(1, "abandoned", "x", now)
	begin(t, s, a, now, true)
	chargeClaim(t, s, a, 1, now)
	if err := s.Abandon(ctx, 1, "abandoned", a.Token); err != nil {
		t.Fatalf("Abandon: %v", err)
	}
	b := claim(1, "abandoned", "x", now)
	wantRecord(t, "Begin after Abandon of a charged claim", b, begin(t, s, b, now, true))
}

// testIdemChargeKept: DeleteExpired keeps an expired claim while its charge
// holds, and the charge lapses at ChargedUntil.
func testIdemChargeKept(t *testing.T, s sluice.IdempotencyStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	c := claim(2, "kept", "x", now)
	begin(t, s, c, now, true)
	charged := chargeClaim(t, s, c, 3, now)
	end := now.Add(idemLease)
	if n, err := s.DeleteExpired(ctx, end); err != nil || n != 0 {
		t.Fatalf("DeleteExpired after the lease = %d, %v; want 0 (the charge holds)", n, err)
	}
	wantRecord(t, "Begin with another body after DeleteExpired", charged, begin(t, s, claim(2, "kept", "y", end), end, false))
	// At ChargedUntil the charge lapses: DeleteExpired removes the claim,
	// and any request may take the key, charged nothing.
	if n, err := s.DeleteExpired(ctx, charged.ChargedUntil); err != nil || n != 1 {
		t.Fatalf("DeleteExpired at ChargedUntil = %d, %v; want 1", n, err)
	}
	fresh := claim(2, "kept", "y", charged.ChargedUntil)
	wantRecord(t, "Begin after the charge lapsed", fresh, begin(t, s, fresh, charged.ChargedUntil, true))

	// Without DeleteExpired, a lapsed charge is not inherited either.
	c2 := claim(2, "lapsed", "x", now)
	begin(t, s, c2, now, true)
	chargeClaim(t, s, c2, 1, now)
	same := claim(2, "lapsed", "x", now.Add(idemTTL))
	wantRecord(t, "Begin of the same request after the charge lapsed", same, begin(t, s, same, now.Add(idemTTL), true))
}

// testIdemBeginConcurrent races Begins of one key through two handles (two
// instances): exactly one claims it, and every other sees that claim.
func testIdemBeginConcurrent(t *testing.T, a, b sluice.IdempotencyStore) {
	now := wholeSecondNow()
	for round := range 5 {
		key := "race-" + strconv.Itoa(round)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			recs    = make([]*sluice.IdempotencyRecord, racers)
			got     = make([]*sluice.IdempotencyRecord, racers)
			claimed = make([]bool, racers)
			errs    = make([]error, racers)
		)
		for i := range racers {
			s := a
			if i%2 == 1 {
				s = b
			}
			recs[i] = claim(1, key, "x", now)
			wg.Go(func() {
				<-start
				got[i], claimed[i], errs[i] = s.Begin(t.Context(), recs[i], now)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i := range racers {
			if errs[i] != nil {
				t.Fatalf("Begin: %v", errs[i])
			}
			if claimed[i] {
				if winner >= 0 {
					t.Fatalf("round %d: attempts %d and %d both claimed the key", round, winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no attempt claimed the key", round)
		}
		for i := range racers {
			if got[i].Token != recs[winner].Token {
				t.Errorf("round %d: attempt %d saw the claim of token %q, want the winner's %q", round, i, got[i].Token, recs[winner].Token)
			}
		}
	}
}
