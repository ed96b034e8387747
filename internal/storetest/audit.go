package storetest

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	sluice "github.com/sluicehq/sluice"
)

// AuditStore is an account store that keeps the audit log of its changes.
type AuditStore interface {
	sluice.AccountService
	sluice.AuditLog
}

// RunAuditLog runs the conformance suite of sluice.AuditLog, as kept by an
// account store that writes the event of each change in the change's
// transaction. open is as for RunAccountService. breakLog makes every later
// write to the audit log of s fail (by dropping its table, say), so that
// the suite can check that a change whose event cannot be written does not
// happen either.
func RunAuditLog(t *testing.T, open func(t *testing.T) AuditStore, breakLog func(t *testing.T, s AuditStore)) {
	t.Run("Actions", func(t *testing.T) { testAuditActions(t, open(t)) })
	t.Run("RecordAudit", func(t *testing.T) { testRecordAudit(t, open(t)) })
	t.Run("Paging", func(t *testing.T) { testAuditPaging(t, open(t)) })
	t.Run("LimitBounds", func(t *testing.T) { testAuditLimitBounds(t, open(t)) })
	t.Run("FailedChangeWritesNoEvent", func(t *testing.T) { testAuditFailedChange(t, open(t)) })
	t.Run("SameTransaction", func(t *testing.T) {
		s := open(t)
		testAuditSameTransaction(t, s, func() { breakLog(t, s) })
	})
	t.Run("Concurrent", func(t *testing.T) { testAuditConcurrent(t, open(t)) })
}

// auditRow is an AuditEvent as the suite compares it: without its ID and time,
// and with its details as canonical JSON (so that the numbers a store
// reads back as json.Number equal the int64s the suite expects).
type auditRow struct {
	Actor     sluice.Actor
	Action    string
	AccountID int64
	Details   string
}

func auditRowOf(t *testing.T, e *sluice.AuditEvent) auditRow {
	t.Helper()
	d := "null"
	if len(e.Details) > 0 {
		b, err := json.Marshal(e.Details)
		if err != nil {
			t.Fatalf("details of %s: %v", e.Action, err)
		}
		d = string(b)
	}
	return auditRow{Actor: e.Actor, Action: e.Action, AccountID: e.AccountID, Details: d}
}

// listAudit returns the events f selects, checking that their IDs are
// strictly decreasing.
func listAudit(t *testing.T, s sluice.AuditLog, f sluice.AuditFilter) []*sluice.AuditEvent {
	t.Helper()
	es, err := s.ListAudit(t.Context(), f)
	if err != nil {
		t.Fatalf("ListAudit(%+v): %v", f, err)
	}
	for i := 1; i < len(es); i++ {
		if es[i].ID >= es[i-1].ID {
			t.Errorf("ListAudit(%+v): event %d has ID %d after ID %d, want newest first", f, i, es[i].ID, es[i-1].ID)
		}
	}
	return es
}

// wantEvents fails unless the events f selects are want, newest first.
func wantEvents(t *testing.T, s sluice.AuditLog, f sluice.AuditFilter, want ...auditRow) {
	t.Helper()
	var got []auditRow
	for _, e := range listAudit(t, s, f) {
		got = append(got, auditRowOf(t, e))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ListAudit(%+v) mismatch (-want +got):\n%s", f, diff)
	}
}

// auditJSON is the canonical JSON of an event's details.
func auditJSON(kv ...any) string {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func limitsJSON(hour, day any) map[string]any { return map[string]any{"hour": hour, "day": day} }

func idString(n int64) string { return strconv.FormatInt(n, 10) }

// Actors of the suite.
var (
	adminActor  = sluice.Actor{Type: sluice.ActorAdmin, IP: "203.0.113.9"}
	tgActor     = sluice.Actor{Type: sluice.ActorTelegram, ID: "7000000001"}
	systemActor = sluice.Actor{Type: sluice.ActorSystem}
)

func userActor(accountID int64) sluice.Actor {
	return sluice.Actor{Type: sluice.ActorUser, ID: idString(accountID), IP: "2001:db8::7"}
}

// testAuditActions makes every change that the store audits, each by an
// actor of its own, and checks every account's events: the actor (a user
// without an ID is the account's), the IP, the details, and nothing for a
// change that changes nothing or for SetPassword.
func testAuditActions(t *testing.T, s AuditStore) {
	bg := t.Context()
	admin := sluice.WithActor(bg, adminActor)
	tg := sluice.WithActor(bg, tgActor)
	begin := time.Now()

	const hash = "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$c2VjcmV0LWhhc2g"
	must := func(op string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}

	// a: created by the admin, on VIP.
	a := &sluice.Account{Email: "Alice@Example.com", PasswordHash: hash, Plan: "vip"}
	must("CreateAccount(a)", s.CreateAccount(admin, a))
	// b: registered by its user, who has no ID until the account exists.
	b := &sluice.Account{Email: "bob@example.com", PasswordHash: hash}
	must("CreateAccount(b)", s.CreateAccount(sluice.WithActor(bg, sluice.Actor{Type: sluice.ActorUser, IP: "198.51.100.7"}), b))
	// c: made by the bot for a Telegram user, with an override.
	c := &sluice.Account{TelegramID: 7_000_000_001, Override: &sluice.LimitOverride{Hour: 3, Day: sluice.Unlimited}}
	must("CreateAccount(c)", s.CreateAccount(tg, c))
	user := sluice.WithActor(bg, userActor(a.ID))

	must("SetPlan", s.SetPlan(admin, a.ID, "pro"))
	must("SetPlan again", s.SetPlan(admin, a.ID, "pro")) // no change, no event
	must("SetOverride", s.SetOverride(admin, a.ID, &sluice.LimitOverride{Hour: 5, Day: sluice.Unlimited}))
	must("SetOverride again", s.SetOverride(admin, a.ID, &sluice.LimitOverride{Hour: 5, Day: -7})) // stored as unlimited too
	must("SetOverride change", s.SetOverride(admin, a.ID, &sluice.LimitOverride{Hour: 7, Day: 70}))
	must("SetOverride(nil)", s.SetOverride(admin, a.ID, nil))
	must("SetOverride(nil) again", s.SetOverride(admin, a.ID, nil))

	key, keyID, keyHash := sluice.NewAPIKey()
	must("CreateAPIKey", s.CreateAPIKey(user, &sluice.APIKey{ID: keyID, AccountID: a.ID, Name: "laptop", Hash: keyHash}))
	k2 := createAPIKey(t, s, a.ID, "ci") // no actor: the system
	now := wholeSecondNow()
	must("RevokeAPIKey", s.RevokeAPIKey(user, a.ID, keyID, now))
	must("RevokeAPIKey by admin", s.RevokeAPIKey(admin, a.ID, k2.ID, now))
	must("SetPassword", s.SetPassword(user, a.ID, "$argon2id$v=19$m=65536,t=1,p=4$bmV3$bmV3LWhhc2g"))

	// The bot's user joins a, leaving c; again changes nothing.
	must("LinkTelegram", s.LinkTelegram(tg, a.ID, 7_000_000_001))
	must("LinkTelegram again", s.LinkTelegram(tg, a.ID, 7_000_000_001))
	must("LinkTelegram(b, 42)", s.LinkTelegram(tg, b.ID, 42))
	must("LinkTelegram(b, 43)", s.LinkTelegram(tg, b.ID, 43))
	must("LinkTelegram(a, 0)", s.LinkTelegram(bg, a.ID, 0))
	must("SetMailAlerts(b, false)", s.SetMailAlerts(sluice.WithActor(bg, userActor(b.ID)), b.ID, false))
	must("SetMailAlerts(b, false) again", s.SetMailAlerts(sluice.WithActor(bg, userActor(b.ID)), b.ID, false)) // no change, no event

	must("RecordAudit", s.RecordAudit(admin, &sluice.AuditEvent{Actor: adminActor, Action: sluice.AuditUsageReset, AccountID: a.ID}))
	must("RecordAudit", s.RecordAudit(bg, &sluice.AuditEvent{Actor: userActor(b.ID), Action: sluice.AuditPasswordReset, AccountID: b.ID}))
	end := time.Now()

	tgID := int64(7_000_000_001)
	wantEvents(t, s, sluice.AuditFilter{AccountID: a.ID},
		auditRow{adminActor, sluice.AuditUsageReset, a.ID, "null"},
		auditRow{systemActor, sluice.AuditTelegramUnlinked, a.ID, auditJSON("telegram_id", tgID)},
		auditRow{tgActor, sluice.AuditTelegramLinked, a.ID, auditJSON("telegram_id", tgID, "from_account_id", c.ID)},
		auditRow{adminActor, sluice.AuditKeyRevoked, a.ID, auditJSON("key_id", k2.ID, "name", "ci")},
		auditRow{userActor(a.ID), sluice.AuditKeyRevoked, a.ID, auditJSON("key_id", keyID, "name", "laptop")},
		auditRow{systemActor, sluice.AuditKeyCreated, a.ID, auditJSON("key_id", k2.ID, "name", "ci")},
		auditRow{userActor(a.ID), sluice.AuditKeyCreated, a.ID, auditJSON("key_id", keyID, "name", "laptop")},
		auditRow{adminActor, sluice.AuditLimitsRemoved, a.ID, auditJSON("from", limitsJSON(7, 70))},
		auditRow{adminActor, sluice.AuditLimitsChanged, a.ID, auditJSON("from", limitsJSON(5, nil), "to", limitsJSON(7, 70))},
		auditRow{adminActor, sluice.AuditLimitsChanged, a.ID, auditJSON("from", nil, "to", limitsJSON(5, nil))},
		auditRow{adminActor, sluice.AuditPlanChanged, a.ID, auditJSON("from", "vip", "to", "pro")},
		auditRow{adminActor, sluice.AuditAccountCreated, a.ID, auditJSON("plan", "vip", "email", "Alice@Example.com")},
	)
	bUser := sluice.Actor{Type: sluice.ActorUser, ID: idString(b.ID), IP: "198.51.100.7"}
	wantEvents(t, s, sluice.AuditFilter{AccountID: b.ID},
		auditRow{userActor(b.ID), sluice.AuditPasswordReset, b.ID, "null"},
		auditRow{userActor(b.ID), sluice.AuditAlertsChanged, b.ID, auditJSON("email", map[string]any{"from": true, "to": false})},
		auditRow{tgActor, sluice.AuditTelegramLinked, b.ID, auditJSON("telegram_id", 43, "previous_telegram_id", 42)},
		auditRow{tgActor, sluice.AuditTelegramLinked, b.ID, auditJSON("telegram_id", 42)},
		auditRow{bUser, sluice.AuditAccountCreated, b.ID, auditJSON("plan", sluice.DefaultPlan, "email", "bob@example.com")},
	)
	wantEvents(t, s, sluice.AuditFilter{AccountID: c.ID},
		auditRow{tgActor, sluice.AuditTelegramUnlinked, c.ID, auditJSON("telegram_id", tgID, "to_account_id", a.ID)},
		auditRow{tgActor, sluice.AuditAccountCreated, c.ID, auditJSON("plan", sluice.DefaultPlan, "telegram_id", tgID, "limits", limitsJSON(3, nil))},
	)

	all := listAudit(t, s, sluice.AuditFilter{Limit: sluice.MaxAuditLimit})
	if len(all) != 19 {
		t.Errorf("ListAudit of every account: %d events, want 19", len(all))
	}
	for _, e := range all {
		// A sanity bound, loose enough for a database server with its
		// own clock: it catches an At that is unset or in the wrong unit.
		if e.At.Before(begin.Add(-5*time.Minute)) || e.At.After(end.Add(5*time.Minute)) {
			t.Errorf("%s: At = %v, want about %v", e.Action, e.At, begin)
		}
	}
	noSecretInEvents(t, all, []byte(hash), []byte(key), keyHash, k2.Hash)
}

// noSecretInEvents fails if the details of an event contain a secret, as it
// is or in hex or base64.
func noSecretInEvents(t *testing.T, es []*sluice.AuditEvent, secrets ...[]byte) {
	t.Helper()
	for _, e := range es {
		b, err := json.Marshal(e.Details)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b) + " " + e.Actor.ID
		for _, s := range secrets {
			for _, form := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s),
				base64.RawStdEncoding.EncodeToString(s), base64.RawURLEncoding.EncodeToString(s)} {
				if form != "" && strings.Contains(text, form) {
					t.Errorf("event %d (%s) holds a secret: %s", e.ID, e.Action, text)
				}
			}
		}
	}
}

// testRecordAudit: RecordAudit sets the ID and a zero At, keeps a given At
// (at the suite's precision) and the actor as given, and leaves the rest
// of the caller's event alone.
func testRecordAudit(t *testing.T, s AuditStore) {
	ctx := t.Context()
	at := time.Date(2026, 3, 1, 12, 30, 0, 123456000, time.UTC)
	e1 := &sluice.AuditEvent{At: at, Actor: sluice.Actor{Type: sluice.ActorUser, IP: "192.0.2.1"}, Action: sluice.AuditPasswordReset, AccountID: 9,
		Details: map[string]any{"n": int64(1) << 60, "s": "x", "nested": map[string]any{"ok": true}}}
	if err := s.RecordAudit(ctx, e1); err != nil {
		t.Fatalf("RecordAudit: %v", err)
	}
	before := time.Now()
	e2 := &sluice.AuditEvent{Actor: adminActor, Action: sluice.AuditUsageReset, AccountID: 9}
	if err := s.RecordAudit(ctx, e2); err != nil {
		t.Fatalf("RecordAudit: %v", err)
	}
	if e1.ID == 0 || e2.ID <= e1.ID {
		t.Errorf("IDs %d then %d, want increasing from above 0", e1.ID, e2.ID)
	}
	if !e1.At.Equal(at) {
		t.Errorf("At = %v, want the given %v", e1.At, at)
	}
	if e2.At.Before(before.Add(-5*time.Minute)) || e2.At.After(time.Now().Add(5*time.Minute)) {
		t.Errorf("At = %v, want about %v", e2.At, before)
	}
	got := listAudit(t, s, sluice.AuditFilter{AccountID: 9})
	if len(got) != 2 {
		t.Fatalf("ListAudit: %d events, want 2", len(got))
	}
	if diff := cmp.Diff([]*sluice.AuditEvent{e2, e1}, got, equateTimes, cmp.Comparer(func(x, y map[string]any) bool {
		bx, _ := json.Marshal(x)
		by, _ := json.Marshal(y)
		return string(bx) == string(by)
	})); diff != "" {
		t.Errorf("ListAudit mismatch (-want +got):\n%s", diff)
	}
	// The numbers come back whole, past 2^53.
	if n, ok := got[1].Details["n"].(json.Number); !ok || n.String() != "1152921504606846976" {
		t.Errorf("details n = %#v, want json.Number 1152921504606846976", got[1].Details["n"])
	}
}

// testAuditPaging walks the log of two accounts page by page with Before
// and Limit, and checks that the pages are the whole log, newest first.
func testAuditPaging(t *testing.T, s AuditStore) {
	ctx := t.Context()
	var ids [2][]int64 // newest last
	var every []int64
	for i := range 13 {
		e := &sluice.AuditEvent{Actor: adminActor, Action: sluice.AuditUsageReset, AccountID: int64(100 + i%2),
			Details: map[string]any{"i": i}}
		if err := s.RecordAudit(ctx, e); err != nil {
			t.Fatalf("RecordAudit: %v", err)
		}
		ids[i%2] = append(ids[i%2], e.ID)
		every = append(every, e.ID)
	}
	reversed := func(xs []int64) []int64 {
		out := make([]int64, len(xs))
		for i, x := range xs {
			out[len(xs)-1-i] = x
		}
		return out
	}
	pages := func(account int64, limit int) []int64 {
		t.Helper()
		var out []int64
		before := int64(0)
		for range 100 {
			es := listAudit(t, s, sluice.AuditFilter{AccountID: account, Before: before, Limit: limit})
			if len(es) > limit {
				t.Fatalf("a page of %d events, over the limit %d", len(es), limit)
			}
			for _, e := range es {
				if account != 0 && e.AccountID != account {
					t.Errorf("ListAudit(account %d) returned an event of account %d", account, e.AccountID)
				}
				out = append(out, e.ID)
			}
			if len(es) < limit {
				return out
			}
			before = es[len(es)-1].ID
		}
		t.Fatal("paging does not end")
		return nil
	}
	for _, tc := range []struct {
		account int64
		want    []int64
	}{{0, reversed(every)}, {100, reversed(ids[0])}, {101, reversed(ids[1])}, {102, nil}} {
		for _, limit := range []int{1, 2, 5, 7, 13, 50} {
			if diff := cmp.Diff(tc.want, pages(tc.account, limit)); diff != "" {
				t.Errorf("account %d, pages of %d (-want +got):\n%s", tc.account, limit, diff)
			}
		}
	}
	// Before names a bound, not an event: one that is no event's ID, one
	// above every ID, one below every ID.
	last := every[len(every)-1]
	for _, tc := range []struct {
		f    sluice.AuditFilter
		want []int64
	}{
		{sluice.AuditFilter{Before: last + 1000}, reversed(every)},
		{sluice.AuditFilter{Before: every[0]}, nil},
		{sluice.AuditFilter{Before: -5}, reversed(every)},
		{sluice.AuditFilter{AccountID: 100, Before: ids[1][3], Limit: 2}, []int64{ids[0][3], ids[0][2]}},
	} {
		var got []int64
		for _, e := range listAudit(t, s, tc.f) {
			got = append(got, e.ID)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ListAudit(%+v) (-want +got):\n%s", tc.f, diff)
		}
	}
}

// testAuditLimitBounds: a Limit of 0 or less is DefaultAuditLimit, one
// above MaxAuditLimit is MaxAuditLimit.
func testAuditLimitBounds(t *testing.T, s AuditStore) {
	ctx := t.Context()
	for i := range sluice.MaxAuditLimit + 1 {
		if err := s.RecordAudit(ctx, &sluice.AuditEvent{Actor: adminActor, Action: sluice.AuditUsageReset, AccountID: int64(i%3 + 1)}); err != nil {
			t.Fatalf("RecordAudit %d: %v", i, err)
		}
	}
	for _, tc := range []struct{ limit, want int }{
		{0, sluice.DefaultAuditLimit}, {-1, sluice.DefaultAuditLimit}, {1, 1},
		{sluice.MaxAuditLimit, sluice.MaxAuditLimit}, {sluice.MaxAuditLimit + 1, sluice.MaxAuditLimit}, {1 << 40, sluice.MaxAuditLimit},
	} {
		if got := len(listAudit(t, s, sluice.AuditFilter{Limit: tc.limit})); got != tc.want {
			t.Errorf("ListAudit(Limit %d): %d events, want %d", tc.limit, got, tc.want)
		}
	}
}

// testAuditFailedChange: a change that fails writes no event.
func testAuditFailedChange(t *testing.T, s AuditStore) {
	ctx := sluice.WithActor(t.Context(), adminActor)
	a := createAccount(t, s, sluice.Account{Email: "pat@example.com", Plan: "starter"})
	missing := a.ID + 1000
	_, keyID, keyHash := sluice.NewAPIKey()
	for _, step := range []struct {
		op  string
		err error
	}{
		{"CreateAccount(email taken)", s.CreateAccount(ctx, &sluice.Account{Email: "PAT@example.com"})},
		{"SetPlan", s.SetPlan(ctx, missing, "vip")},
		{"SetOverride", s.SetOverride(ctx, missing, &sluice.LimitOverride{Hour: 1, Day: 2})},
		{"SetOverride(nil)", s.SetOverride(ctx, missing, nil)},
		{"CreateAPIKey", s.CreateAPIKey(ctx, &sluice.APIKey{ID: keyID, AccountID: missing, Name: "x", Hash: keyHash})},
		{"RevokeAPIKey", s.RevokeAPIKey(ctx, a.ID, keyID, wholeSecondNow())},
		{"LinkTelegram", s.LinkTelegram(ctx, missing, 77)},
	} {
		if step.err == nil {
			t.Errorf("%s succeeded, want an error", step.op)
		}
	}
	wantEvents(t, s, sluice.AuditFilter{},
		auditRow{systemActor, sluice.AuditAccountCreated, a.ID, auditJSON("plan", "starter", "email", "pat@example.com")})
}

// testAuditSameTransaction: once the log cannot be written, every audited
// change fails and changes nothing, since its event is written in its
// transaction.
func testAuditSameTransaction(t *testing.T, s AuditStore, breakLog func()) {
	ctx := sluice.WithActor(t.Context(), adminActor)
	a := createAccount(t, s, sluice.Account{Email: "quinn@example.com", Plan: "starter", TelegramID: 5001})
	b := createAccount(t, s, sluice.Account{Email: "ruth@example.com", Plan: "vip"})
	k := createAPIKey(t, s, b.ID, "live")
	breakLog()

	_, keyID, keyHash := sluice.NewAPIKey()
	for _, step := range []struct {
		op  string
		err error
	}{
		{"CreateAccount", s.CreateAccount(ctx, &sluice.Account{Email: "sam@example.com"})},
		{"SetPlan", s.SetPlan(ctx, a.ID, "vip")},
		{"SetOverride", s.SetOverride(ctx, a.ID, &sluice.LimitOverride{Hour: 1, Day: 2})},
		{"CreateAPIKey", s.CreateAPIKey(ctx, &sluice.APIKey{ID: keyID, AccountID: b.ID, Name: "new", Hash: keyHash})},
		{"RevokeAPIKey", s.RevokeAPIKey(ctx, b.ID, k.ID, wholeSecondNow())},
		{"LinkTelegram", s.LinkTelegram(ctx, b.ID, 5001)},
		{"RecordAudit", s.RecordAudit(ctx, &sluice.AuditEvent{Actor: adminActor, Action: sluice.AuditUsageReset, AccountID: a.ID})},
	} {
		if step.err == nil {
			t.Errorf("%s with a broken audit log succeeded, want an error", step.op)
		}
	}
	_, err := s.FindAccountByEmail(ctx, "sam@example.com")
	wantCode(t, "FindAccountByEmail(sam)", err, sluice.ENOTFOUND)
	wantAccount(t, s, a)
	wantAccount(t, s, b)
	_, err = s.FindAPIKey(ctx, keyID)
	wantCode(t, "FindAPIKey(new)", err, sluice.ENOTFOUND)
	if got, err := s.FindAPIKey(ctx, k.ID); err != nil || !got.RevokedAt.IsZero() {
		t.Errorf("FindAPIKey(live) = %+v, %v; want it live", got, err)
	}
	// SetPassword writes no event, so it works on.
	if err := s.SetPassword(ctx, a.ID, "$argon2id$v=19$m=65536,t=1,p=4$eA$eQ"); err != nil {
		t.Errorf("SetPassword with a broken audit log: %v", err)
	}
}

// testAuditConcurrent: changes racing on one account each write their
// event, under distinct IDs.
func testAuditConcurrent(t *testing.T, s AuditStore) {
	a := createAccount(t, s, sluice.Account{Email: "tess@example.com", Plan: "starter"})
	var wg sync.WaitGroup
	errs := make(chan error, 2*racers)
	for i := range racers {
		wg.Go(func() {
			ctx := sluice.WithActor(context.Background(), sluice.Actor{Type: sluice.ActorUser, ID: idString(a.ID), IP: fmt.Sprintf("192.0.2.%d", i)})
			_, keyID, hash := sluice.NewAPIKey()
			errs <- s.CreateAPIKey(ctx, &sluice.APIKey{ID: keyID, AccountID: a.ID, Name: fmt.Sprint(i), Hash: hash})
			errs <- s.SetPlan(ctx, a.ID, fmt.Sprint("plan", i))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent change: %v", err)
		}
	}
	es := listAudit(t, s, sluice.AuditFilter{AccountID: a.ID, Limit: sluice.MaxAuditLimit})
	counts := map[string]int{}
	for _, e := range es {
		counts[e.Action]++
	}
	// Every SetPlan changes the plan (each racer sets its own), so each
	// writes plan.changed.
	want := map[string]int{sluice.AuditAccountCreated: 1, sluice.AuditKeyCreated: racers, sluice.AuditPlanChanged: racers}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("events by action (-want +got):\n%s", diff)
	}
	// The plan.changed events chain: each one's "from" is the "to" of the
	// one before it.
	var prev any = "starter"
	for i := len(es) - 1; i >= 0; i-- {
		if e := es[i]; e.Action == sluice.AuditPlanChanged {
			if e.Details["from"] != prev {
				t.Errorf("plan.changed %d from %v, want from %v: the reads of the old plan raced", e.ID, e.Details["from"], prev)
			}
			prev = e.Details["to"]
		}
	}
}
