package storetest

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	sluice "github.com/sluicehq/sluice"
)

// RunBotUpdateStore runs the conformance suite of sluice.BotUpdateStore.
// Every call of open must return a new, empty store and a function that
// opens another handle on the same data (as a second instance would: a
// second connection pool, a second open of the file), closed when the test
// ends. Subtests run one after another.
//
// The store has no read but Claim, so the suite sees what an update holds
// through the claims that take it over. Its clock is a parameter: it steps
// through leases and expiries without sleeping.
func RunBotUpdateStore(t *testing.T, open func(t *testing.T) (s sluice.BotUpdateStore, another func() sluice.BotUpdateStore)) {
	one := func(t *testing.T) sluice.BotUpdateStore { s, _ := open(t); return s }
	t.Run("AddOnce", func(t *testing.T) { testBotAddOnce(t, one(t)) })
	t.Run("RoundTrip", func(t *testing.T) { testBotRoundTrip(t, one(t)) })
	t.Run("Renew", func(t *testing.T) { testBotRenew(t, one(t)) })
	t.Run("Release", func(t *testing.T) { testBotRelease(t, one(t)) })
	t.Run("Claim", func(t *testing.T) { testBotClaim(t, one(t)) })
	t.Run("ChargeInherited", func(t *testing.T) { testBotChargeInherited(t, one(t)) })
	t.Run("NotHeld", func(t *testing.T) { testBotNotHeld(t, one(t)) })
	t.Run("Takeover", func(t *testing.T) { testBotTakeover(t, one(t)) })
	t.Run("Done", func(t *testing.T) { testBotDone(t, one(t)) })
	t.Run("DeleteExpired", func(t *testing.T) { testBotDeleteExpired(t, one(t)) })
	t.Run("ClaimConcurrent", func(t *testing.T) {
		s, another := open(t)
		testBotClaimConcurrent(t, s, another())
	})
}

// Lease and lifetime of the suite's updates.
const (
	botLease = time.Minute
	botTTL   = 24 * time.Hour
)

// botUpdate is update id of bot, received at now by holder, held until now
// + botLease and kept until now + botTTL.
func botUpdate(bot, id int64, holder string, now time.Time) *sluice.BotUpdate {
	return &sluice.BotUpdate{Bot: bot, ID: id,
		Payload: []byte(`{"update_id":` + strconv.FormatInt(id, 10) + `,"message":{"text":"a cat"}}`),
		Holder:  holder, LeaseUntil: now.Add(botLease), ReceivedAt: now, ExpiresAt: now.Add(botTTL)}
}

// addUpdate calls Add and fails the test on an error or if added is not
// wantAdded.
func addUpdate(t testing.TB, s sluice.BotUpdateStore, u *sluice.BotUpdate, wantAdded bool) {
	t.Helper()
	added, err := s.Add(t.Context(), u)
	if err != nil {
		t.Fatalf("Add(%d, %d): %v", u.Bot, u.ID, err)
	}
	if added != wantAdded {
		t.Fatalf("Add(%d, %d) = %v, want %v", u.Bot, u.ID, added, wantAdded)
	}
}

// claimUpdates calls Claim and fails the test on an error.
func claimUpdates(t *testing.T, s sluice.BotUpdateStore, bot int64, holder string, until, now time.Time, n int) []*sluice.BotUpdate {
	t.Helper()
	us, err := s.Claim(t.Context(), bot, holder, until, now, n)
	if err != nil {
		t.Fatalf("Claim(%d, %q, n=%d): %v", bot, holder, n, err)
	}
	return us
}

// claimIDs calls Claim and fails the test unless it returns the updates
// wantIDs, in that order.
func claimIDs(t *testing.T, op string, s sluice.BotUpdateStore, bot int64, holder string, until, now time.Time, n int, wantIDs ...int64) []*sluice.BotUpdate {
	t.Helper()
	us := claimUpdates(t, s, bot, holder, until, now, n)
	got := []int64{}
	for _, u := range us {
		got = append(got, u.ID)
	}
	if wantIDs == nil {
		wantIDs = []int64{}
	}
	if diff := cmp.Diff(wantIDs, got); diff != "" {
		t.Fatalf("%s: IDs claimed (-want +got):\n%s", op, diff)
	}
	return us
}

// taken is u as Claim returns it to holder, held until until, with attempts
// and the charge given.
func taken(u *sluice.BotUpdate, holder string, until time.Time, attempts int, charged int64, at, chargedUntil time.Time) *sluice.BotUpdate {
	c := *u
	c.Holder, c.LeaseUntil, c.Done, c.Attempts = holder, until, false, attempts
	c.Charged, c.ChargedAt, c.ChargedUntil = charged, at, chargedUntil
	return &c
}

func wantUpdates(t *testing.T, op string, want, got []*sluice.BotUpdate) {
	t.Helper()
	if diff := cmp.Diff(want, got, equateTimes, equateBodies); diff != "" {
		t.Errorf("%s (-want +got):\n%s", op, diff)
	}
}

func chargeUpdate(t *testing.T, s sluice.BotUpdateStore, u *sluice.BotUpdate, holder string, units int64, at, until time.Time) {
	t.Helper()
	if err := s.Charge(t.Context(), u.Bot, u.ID, holder, units, at, until); err != nil {
		t.Fatalf("Charge(%d, %d, %q, %d): %v", u.Bot, u.ID, holder, units, err)
	}
}

func finishUpdate(t *testing.T, s sluice.BotUpdateStore, u *sluice.BotUpdate, holder string) {
	t.Helper()
	if err := s.Finish(t.Context(), u.Bot, u.ID, holder); err != nil {
		t.Fatalf("Finish(%d, %d, %q): %v", u.Bot, u.ID, holder, err)
	}
}

func renewUpdates(t *testing.T, s sluice.BotUpdateStore, bot int64, holder string, until time.Time) {
	t.Helper()
	if err := s.Renew(t.Context(), bot, holder, until); err != nil {
		t.Fatalf("Renew(%d, %q): %v", bot, holder, err)
	}
}

func releaseUpdates(t *testing.T, s sluice.BotUpdateStore, bot int64, holder string, now time.Time) {
	t.Helper()
	if err := s.Release(t.Context(), bot, holder, now); err != nil {
		t.Fatalf("Release(%d, %q): %v", bot, holder, err)
	}
}

// testBotAddOnce: a delivery again of an update is refused and changes
// nothing; the same update_id of another bot is another update.
func testBotAddOnce(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	u := botUpdate(1, 100, "a", now)
	addUpdate(t, s, u, true)
	again := botUpdate(1, 100, "b", now.Add(time.Second))
	again.Payload, again.LeaseUntil, again.ExpiresAt = []byte(`{"update_id":100,"other":true}`), now.Add(time.Hour), now.Add(2*botTTL)
	addUpdate(t, s, again, false)
	other := botUpdate(2, 100, "b", now)
	other.Payload = []byte(`{"update_id":100,"bot":2}`)
	addUpdate(t, s, other, true)
	addUpdate(t, s, other, false)

	// The first Add stands: its holder, lease, payload and attempts.
	end := u.LeaseUntil
	claimIDs(t, "Claim before the first lease's end", s, 1, "c", end.Add(botLease), end.Add(-time.Second), 10)
	got := claimUpdates(t, s, 1, "c", end.Add(botLease), end, 10)
	wantUpdates(t, "Claim at the first lease's end", []*sluice.BotUpdate{taken(u, "c", end.Add(botLease), 2, 0, time.Time{}, time.Time{})}, got)
	got = claimUpdates(t, s, 2, "c", end.Add(botLease), end, 10)
	wantUpdates(t, "Claim of the other bot's update", []*sluice.BotUpdate{taken(other, "c", end.Add(botLease), 2, 0, time.Time{}, time.Time{})}, got)
}

// testBotRoundTrip: what Add stores comes back from Claim, the payload byte
// for byte and the times to the microsecond; Add ignores the attempts and
// the charge it is given.
func testBotRoundTrip(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	payload := make([]byte, 0, 64<<10)
	for i := range cap(payload) {
		payload = append(payload, byte(i*31+i>>8))
	}
	u := &sluice.BotUpdate{
		Bot: 1<<40 + 7, ID: 1<<52 + 3, Payload: payload, Holder: "instance-é-1",
		LeaseUntil: now.Add(botLease + 987654321*time.Nanosecond),
		ReceivedAt: now.Add(123456789 * time.Nanosecond),
		ExpiresAt:  now.Add(botTTL + 555*time.Microsecond),
		// Add records Attempts 1 and nothing charged whatever u says.
		Attempts: 5, Charged: 3, ChargedAt: now, ChargedUntil: now.Add(time.Hour),
	}
	addUpdate(t, s, u, true)
	empty := botUpdate(1, 1, "a", now)
	empty.Payload = nil
	addUpdate(t, s, empty, true)

	until := now.Add(10 * botLease).Add(321 * time.Microsecond)
	at := u.LeaseUntil.Add(time.Microsecond) // both leases have ended
	got := claimUpdates(t, s, u.Bot, "b", until, at, 10)
	wantUpdates(t, "Claim", []*sluice.BotUpdate{taken(u, "b", until, 2, 0, time.Time{}, time.Time{})}, got)
	if len(got) == 1 && len(got[0].Payload) != len(payload) {
		t.Errorf("claimed payload has %d bytes, want %d", len(got[0].Payload), len(payload))
	}
	got = claimUpdates(t, s, 1, "b", until, at, 10)
	wantUpdates(t, "Claim of an update with no payload", []*sluice.BotUpdate{taken(empty, "b", until, 2, 0, time.Time{}, time.Time{})}, got)
}

// testBotRenew: Renew moves the leases of one holder's updates of one bot,
// and no others.
func testBotRenew(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	for _, u := range []*sluice.BotUpdate{
		botUpdate(1, 1, "a", now), botUpdate(1, 2, "a", now), botUpdate(1, 3, "b", now), botUpdate(2, 1, "a", now),
	} {
		addUpdate(t, s, u, true)
	}
	renewed := now.Add(10 * botLease)
	renewUpdates(t, s, 1, "a", renewed)
	renewUpdates(t, s, 1, "nobody", renewed.Add(time.Hour))

	end := now.Add(botLease)
	claimIDs(t, "Claim of bot 1 at the first lease's end", s, 1, "c", end.Add(time.Hour), end, 10, 3)
	claimIDs(t, "Claim of bot 2 at the first lease's end", s, 2, "c", end.Add(time.Hour), end, 10, 1)
	claimIDs(t, "Claim before the renewed lease's end", s, 1, "c", end.Add(time.Hour), renewed.Add(-time.Second), 10)
	claimIDs(t, "Claim at the renewed lease's end", s, 1, "c", renewed.Add(time.Hour), renewed, 10, 1, 2)
}

// testBotRelease: Release ends one holder's leases of one bot at once, and
// no others.
func testBotRelease(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	for _, u := range []*sluice.BotUpdate{
		botUpdate(1, 1, "a", now), botUpdate(1, 2, "a", now), botUpdate(1, 3, "b", now), botUpdate(2, 1, "a", now),
	} {
		addUpdate(t, s, u, true)
	}
	stop := now.Add(time.Second)
	releaseUpdates(t, s, 1, "a", stop)
	releaseUpdates(t, s, 1, "nobody", stop)
	claimIDs(t, "Claim of bot 1 after Release", s, 1, "c", stop.Add(botLease), stop, 10, 1, 2)
	claimIDs(t, "Claim of bot 2 after Release", s, 2, "c", stop.Add(botLease), stop, 10)
	// And it is c's now: a's Release does not reach it.
	releaseUpdates(t, s, 1, "a", stop)
	claimIDs(t, "Claim after a stale Release", s, 1, "d", stop.Add(botLease), stop, 10)
}

// testBotClaim: what Claim takes (not done, the lease ended at or before
// now, not expired), in which order and how many, and what it leaves.
func testBotClaim(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	ids := []int64{17, 11, 15, 13, 10, 16, 12, 14, 18} // not in order: Claim sorts
	lease := map[int64]time.Time{
		11: now.Add(-time.Second), 12: now, 13: now.Add(time.Second), 15: now.Add(-time.Hour),
	}
	expires := map[int64]time.Time{14: now, 15: now.Add(time.Second), 18: now.Add(-time.Hour)}
	byID := map[int64]*sluice.BotUpdate{}
	for _, id := range ids {
		u := botUpdate(1, id, "a", now.Add(-2*botLease)) // the lease ended a minute ago
		if l, ok := lease[id]; ok {
			u.LeaseUntil = l
		}
		if e, ok := expires[id]; ok {
			u.ExpiresAt = e
		}
		addUpdate(t, s, u, true)
		byID[id] = u
	}
	finishUpdate(t, s, byID[10], "a")
	addUpdate(t, s, botUpdate(2, 11, "a", now.Add(-2*botLease)), true)

	// Claimable at now: 11, 12, 15, 16, 17. Not 10 (done), 13 (held a
	// second more), 14 and 18 (expired), nor bot 2's 11.
	until := now.Add(botLease)
	claimIDs(t, "Claim n=0", s, 1, "c", until, now, 0)
	got := claimIDs(t, "Claim n=3", s, 1, "c", until, now, 3, 11, 12, 15)
	var want []*sluice.BotUpdate
	for _, id := range []int64{11, 12, 15} {
		want = append(want, taken(byID[id], "c", until, 2, 0, time.Time{}, time.Time{}))
	}
	wantUpdates(t, "Claim n=3", want, got)
	claimIDs(t, "Claim n=10", s, 1, "d", until, now, 10, 16, 17)
	claimIDs(t, "Claim with nothing left", s, 1, "d", until, now, 10)

	// Held by c and d until until; 13 is free from now + 1s.
	claimIDs(t, "Claim a second on", s, 1, "e", until, now.Add(time.Second), 10, 13)
	claimIDs(t, "Claim before the claims' lease ends", s, 1, "e", until, until.Add(-time.Second), 10)
	// e's own 13 is not e's to claim: a holder renews its updates.
	got = claimIDs(t, "Claim at the claims' lease end", s, 1, "e", until.Add(botLease), until, 10, 11, 12, 16, 17)
	for _, u := range got {
		if u.Attempts != 3 {
			t.Errorf("Attempts of update %d claimed a second time = %d, want 3", u.ID, u.Attempts)
		}
	}
	claimIDs(t, "Claim of e's own by another", s, 1, "f", until.Add(botLease), until, 10, 13)
}

// testBotChargeInherited: a claim keeps the charge while it holds
// (ChargedUntil after now) and zeroes it, as stored, once it lapsed; units 0
// clears a charge.
func testBotChargeInherited(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	u := botUpdate(1, 1, "a", now)
	addUpdate(t, s, u, true)
	at, chargedUntil := now.Add(time.Second), now.Add(time.Hour)
	chargeUpdate(t, s, u, "a", 2, at, chargedUntil)

	end := u.LeaseUntil
	got := claimUpdates(t, s, 1, "b", end.Add(botLease), end, 1)
	wantUpdates(t, "Claim while the charge holds", []*sluice.BotUpdate{taken(u, "b", end.Add(botLease), 2, 2, at, chargedUntil)}, got)

	// At ChargedUntil the charge has lapsed: the claim zeroes it.
	renewUpdates(t, s, 1, "b", chargedUntil)
	got = claimUpdates(t, s, 1, "c", chargedUntil.Add(botLease), chargedUntil, 1)
	wantUpdates(t, "Claim at ChargedUntil", []*sluice.BotUpdate{taken(u, "c", chargedUntil.Add(botLease), 3, 0, time.Time{}, time.Time{})}, got)
	// Zeroed as stored: a claim at a time the charge would still hold
	// (c released the update before it) inherits nothing.
	early := chargedUntil.Add(-time.Minute)
	releaseUpdates(t, s, 1, "c", early)
	got = claimUpdates(t, s, 1, "d", early.Add(botLease), early, 1)
	wantUpdates(t, "Claim after a claim zeroed the charge", []*sluice.BotUpdate{taken(u, "d", early.Add(botLease), 4, 0, time.Time{}, time.Time{})}, got)

	// The holder that inherited a charge records its own, which passes on.
	chargeUpdate(t, s, u, "d", 5, early, early.Add(time.Hour))
	got = claimUpdates(t, s, 1, "e", early.Add(2*botLease), early.Add(botLease), 1)
	wantUpdates(t, "Claim after a second charge", []*sluice.BotUpdate{taken(u, "e", early.Add(2*botLease), 5, 5, early, early.Add(time.Hour))}, got)

	// Units 0: the charge was refunded, nothing is inherited.
	v := botUpdate(1, 2, "a", now)
	addUpdate(t, s, v, true)
	chargeUpdate(t, s, v, "a", 3, now, chargedUntil)
	chargeUpdate(t, s, v, "a", 0, now.Add(time.Second), chargedUntil)
	got = claimUpdates(t, s, 1, "b", v.LeaseUntil.Add(botLease), v.LeaseUntil, 1)
	wantUpdates(t, "Claim after a charge of 0", []*sluice.BotUpdate{taken(v, "b", v.LeaseUntil.Add(botLease), 2, 0, time.Time{}, time.Time{})}, got)
}

// testBotNotHeld: Charge and Finish of an update that the holder does not
// hold, that is done or that does not exist are ENOTFOUND, and change
// nothing.
func testBotNotHeld(t *testing.T, s sluice.BotUpdateStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	u := botUpdate(1, 1, "a", now)
	addUpdate(t, s, u, true)
	for _, c := range []struct {
		name   string
		bot    int64
		id     int64
		holder string
	}{
		{"another holder", 1, 1, "b"},
		{"an update never added", 1, 2, "a"},
		{"another bot's update", 2, 1, "a"},
	} {
		wantCode(t, "Charge by "+c.name, s.Charge(ctx, c.bot, c.id, c.holder, 4, now, now.Add(time.Hour)), sluice.ENOTFOUND)
		wantCode(t, "Charge of 0 by "+c.name, s.Charge(ctx, c.bot, c.id, c.holder, 0, now, now.Add(time.Hour)), sluice.ENOTFOUND)
		wantCode(t, "Finish by "+c.name, s.Finish(ctx, c.bot, c.id, c.holder), sluice.ENOTFOUND)
	}
	// Still a's, not done and not charged.
	got := claimUpdates(t, s, 1, "c", u.LeaseUntil.Add(botLease), u.LeaseUntil, 10)
	wantUpdates(t, "Claim after refused calls", []*sluice.BotUpdate{taken(u, "c", u.LeaseUntil.Add(botLease), 2, 0, time.Time{}, time.Time{})}, got)

	finishUpdate(t, s, u, "c")
	wantCode(t, "Finish twice", s.Finish(ctx, 1, 1, "c"), sluice.ENOTFOUND)
	wantCode(t, "Charge of a done update", s.Charge(ctx, 1, 1, "c", 1, now, now.Add(time.Hour)), sluice.ENOTFOUND)
	wantCode(t, "Charge of 0 of a done update", s.Charge(ctx, 1, 1, "c", 0, now, now.Add(time.Hour)), sluice.ENOTFOUND)
}

// testBotTakeover: once another instance claimed an update, its former
// holder's Charge, Finish, Renew and Release do nothing to it.
func testBotTakeover(t *testing.T, s sluice.BotUpdateStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	u := botUpdate(1, 1, "a", now)
	addUpdate(t, s, u, true)
	chargeUpdate(t, s, u, "a", 1, now, now.Add(time.Hour))

	end := u.LeaseUntil
	bUntil := end.Add(botLease)
	claimIDs(t, "Claim at the lease's end", s, 1, "b", bUntil, end, 10, 1)

	// a, back from a pause, still believes it holds the update.
	wantCode(t, "Charge by the former holder", s.Charge(ctx, 1, 1, "a", 7, end, end.Add(time.Hour)), sluice.ENOTFOUND)
	wantCode(t, "Finish by the former holder", s.Finish(ctx, 1, 1, "a"), sluice.ENOTFOUND)
	renewUpdates(t, s, 1, "a", end.Add(time.Hour))
	releaseUpdates(t, s, 1, "a", end)

	claimIDs(t, "Claim before b's lease ends", s, 1, "c", bUntil.Add(botLease), bUntil.Add(-time.Second), 10)
	got := claimUpdates(t, s, 1, "c", bUntil.Add(botLease), bUntil, 10)
	wantUpdates(t, "Claim at b's lease end", []*sluice.BotUpdate{taken(u, "c", bUntil.Add(botLease), 3, 1, now, now.Add(time.Hour))}, got)
	wantCode(t, "Finish by b", s.Finish(ctx, 1, 1, "b"), sluice.ENOTFOUND)
	finishUpdate(t, s, u, "c")
}

// testBotDone: a done update is never claimed again, whatever its holder
// does, and a delivery of it again is refused.
func testBotDone(t *testing.T, s sluice.BotUpdateStore) {
	now := wholeSecondNow()
	u := botUpdate(1, 1, "a", now)
	addUpdate(t, s, u, true)
	chargeUpdate(t, s, u, "a", 1, now, now.Add(time.Hour))
	finishUpdate(t, s, u, "a")
	v := botUpdate(1, 2, "a", now)
	addUpdate(t, s, v, true)
	claimIDs(t, "Claim of v", s, 1, "b", v.LeaseUntil.Add(botLease), v.LeaseUntil, 10, 2)
	finishUpdate(t, s, v, "b")

	releaseUpdates(t, s, 1, "a", now)
	releaseUpdates(t, s, 1, "b", now)
	renewUpdates(t, s, 1, "a", now)
	for _, at := range []time.Time{now, u.LeaseUntil, now.Add(botTTL - time.Second)} {
		claimIDs(t, "Claim of done updates", s, 1, "c", at.Add(botLease), at, 10)
	}
	addUpdate(t, s, botUpdate(1, 1, "c", now.Add(time.Hour)), false)
	addUpdate(t, s, botUpdate(1, 2, "c", now.Add(time.Hour)), false)
	claimIDs(t, "Claim after Add of done updates", s, 1, "c", now.Add(3*time.Hour), now.Add(2*time.Hour), 10)
}

// testBotDeleteExpired: DeleteExpired deletes every update that expired,
// done or not, and nothing else; a delivery of a deleted update is new.
func testBotDeleteExpired(t *testing.T, s sluice.BotUpdateStore) {
	ctx := t.Context()
	now := wholeSecondNow()
	// Updates, done and not, that expire an hour ago, now, and in an hour.
	for i, end := range []time.Time{now.Add(-time.Hour), now, now.Add(time.Hour)} {
		for _, done := range []bool{false, true} {
			u := botUpdate(1, int64(2*i+1), "a", end.Add(-2*time.Hour))
			u.ExpiresAt = end
			if done {
				u.ID++
			}
			addUpdate(t, s, u, true)
			if done {
				finishUpdate(t, s, u, "a")
			}
		}
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != 4 {
		t.Fatalf("DeleteExpired = %d, %v; want 4", n, err)
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != 0 {
		t.Fatalf("DeleteExpired again = %d, %v; want 0", n, err)
	}
	// What has not expired is still there: the update not done is
	// claimed, the done one refuses a delivery again.
	claimIDs(t, "Claim after DeleteExpired", s, 1, "b", now.Add(botLease), now, 10, 5)
	addUpdate(t, s, botUpdate(1, 6, "b", now), false)
	// A delivery of a deleted update is a new update.
	for id := range int64(4) {
		addUpdate(t, s, botUpdate(1, id+1, "b", now), true)
	}

	// More than one batch.
	const many = 2500
	for id := range int64(many) {
		u := botUpdate(3, id+1, "a", now.Add(-botTTL))
		addUpdate(t, s, u, true)
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != many {
		t.Fatalf("DeleteExpired of %d = %d, %v", many, n, err)
	}
}

// testBotClaimConcurrent races claimers through two handles (two
// instances) over updates whose lease has ended: every update is claimed by
// exactly one, and held by it.
func testBotClaimConcurrent(t *testing.T, a, b sluice.BotUpdateStore) {
	const (
		updates   = 200
		perHandle = 8
		batch     = 7
	)
	now := wholeSecondNow()
	until := now.Add(botLease)
	for round := range 3 {
		bot := int64(10 + round)
		for id := range int64(updates) {
			addUpdate(t, a, botUpdate(bot, id+1, "stopped", now.Add(-2*botLease)), true)
		}
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			holders = make([]string, 2*perHandle)
			got     = make([][]*sluice.BotUpdate, 2*perHandle)
			errs    = make([]error, 2*perHandle)
		)
		for i := range 2 * perHandle {
			s := a
			if i%2 == 1 {
				s = b
			}
			holders[i] = "claimer-" + strconv.Itoa(i)
			wg.Go(func() {
				<-start
				for {
					us, err := s.Claim(t.Context(), bot, holders[i], until, now, batch)
					if err != nil {
						errs[i] = err
						return
					}
					if len(us) == 0 {
						return
					}
					if len(us) > batch {
						errs[i] = fmt.Errorf("Claim returned %d updates, more than %d", len(us), batch)
						return
					}
					got[i] = append(got[i], us...)
				}
			})
		}
		close(start)
		wg.Wait()

		by := map[int64]int{} // the claimer of each update
		for i := range 2 * perHandle {
			if errs[i] != nil {
				t.Fatalf("round %d: claimer %d: %v", round, i, errs[i])
			}
			for _, u := range got[i] {
				if j, ok := by[u.ID]; ok {
					t.Fatalf("round %d: update %d claimed by claimers %d and %d", round, u.ID, j, i)
				}
				by[u.ID] = i
				if u.Bot != bot || u.Holder != holders[i] || u.Attempts != 2 || !u.LeaseUntil.Equal(until) {
					t.Errorf("round %d: claimer %d got update %d of bot %d, holder %q, attempts %d, lease until %v",
						round, i, u.ID, u.Bot, u.Holder, u.Attempts, u.LeaseUntil)
				}
			}
		}
		if len(by) != updates {
			t.Fatalf("round %d: %d updates claimed, want %d", round, len(by), updates)
		}
		claimIDs(t, "Claim after the race", a, bot, "late", until, now, updates)
		// Each is held by the claimer it was returned to.
		for id, i := range by {
			s := a
			if i%2 == 1 {
				s = b
			}
			finishUpdate(t, s, &sluice.BotUpdate{Bot: bot, ID: id}, holders[i])
		}
	}
}

// BenchmarkBotUpdateStore measures the calls the bot makes on s:
//
//   - "add+charge+finish": Add of an update received, Charge of what
//     handling it took from the quota, Finish once handled: all that a
//     handled update writes, in three round trips (run in parallel: the
//     bot handles updates concurrently);
//   - "renew/100": Renew of the leases of an instance that holds 100
//     updates, the call each instance makes every few seconds.
func BenchmarkBotUpdateStore(b *testing.B, s sluice.BotUpdateStore) {
	var seq atomic.Int64
	bot := time.Now().UnixNano() // not a bot of an earlier run on the same store
	b.Run("add+charge+finish", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				u := botUpdate(bot, seq.Add(1), "bench", now)
				if added, err := s.Add(b.Context(), u); err != nil || !added {
					b.Fatalf("Add = %v, %v", added, err)
				}
				if err := s.Charge(b.Context(), u.Bot, u.ID, u.Holder, 1, now, now.Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
				if err := s.Finish(b.Context(), u.Bot, u.ID, u.Holder); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("renew/100", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		holder := "renew-" + strconv.FormatInt(seq.Add(1), 10)
		for range 100 {
			addUpdate(b, s, botUpdate(bot, seq.Add(1), holder, now), true)
		}
		var i time.Duration
		for b.Loop() {
			i++
			if err := s.Renew(b.Context(), bot, holder, now.Add(botLease+i*time.Millisecond)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
