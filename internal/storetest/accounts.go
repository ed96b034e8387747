package storetest

import (
	"encoding/base64"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	sluice "github.com/sluicehq/sluice"
)

// RunAccountService runs the conformance suite of sluice.AccountService.
// Every call of open must return a new, empty store, and close it when the
// test ends (t.Cleanup). Subtests run one after another, so open may reset
// a database that they share.
//
// Times are compared at microsecond precision, the finest that every
// implementation keeps (PostgreSQL's timestamptz); the times the suite
// passes in are whole seconds, so that the boundaries it checks (a session
// or token that expires at now) are exact in every store.
func RunAccountService(t *testing.T, open func(t *testing.T) sluice.AccountService) {
	t.Run("CreateAccount", func(t *testing.T) { testCreateAccount(t, open(t)) })
	t.Run("CreateAccountFull", func(t *testing.T) { testCreateAccountFull(t, open(t)) })
	t.Run("FindAccountByEmail", func(t *testing.T) { testFindAccountByEmail(t, open(t)) })
	t.Run("TelegramOnlyAccounts", func(t *testing.T) { testTelegramOnlyAccounts(t, open(t)) })
	t.Run("EmailTaken", func(t *testing.T) { testEmailTaken(t, open(t)) })
	t.Run("AccountNotFound", func(t *testing.T) { testAccountNotFound(t, open(t)) })
	t.Run("SetPlan", func(t *testing.T) { testSetPlan(t, open(t)) })
	t.Run("SetOverride", func(t *testing.T) { testSetOverride(t, open(t)) })
	t.Run("SetPassword", func(t *testing.T) { testSetPassword(t, open(t)) })
	t.Run("LinkTelegram", func(t *testing.T) { testLinkTelegram(t, open(t)) })
	t.Run("SetMailAlerts", func(t *testing.T) { testSetMailAlerts(t, open(t)) })
	t.Run("SetTelegramModel", func(t *testing.T) { testSetTelegramModel(t, open(t)) })
	t.Run("APIKeys", func(t *testing.T) { testAPIKeys(t, open(t)) })
	t.Run("RevokeAPIKey", func(t *testing.T) { testRevokeAPIKey(t, open(t)) })
	t.Run("TouchAPIKey", func(t *testing.T) { testTouchAPIKey(t, open(t)) })
	t.Run("Sessions", func(t *testing.T) { testSessions(t, open(t)) })
	t.Run("DeleteSessions", func(t *testing.T) { testDeleteSessions(t, open(t)) })
	t.Run("DeleteExpired", func(t *testing.T) { testDeleteExpired(t, open(t)) })
	t.Run("Tokens", func(t *testing.T) { testTokens(t, open(t)) })
	t.Run("ConsumeTokenConcurrent", func(t *testing.T) { testConsumeTokenConcurrent(t, open(t)) })
	t.Run("ResetSpendsAllResetTokens", func(t *testing.T) { testResetSpendsAllResetTokens(t, open(t)) })
	t.Run("ConsumeResetTokensConcurrent", func(t *testing.T) { testConsumeResetTokensConcurrent(t, open(t)) })
	t.Run("TelegramTaken", func(t *testing.T) { testTelegramTaken(t, open(t)) })
	t.Run("CreateAccountConcurrent", func(t *testing.T) { testCreateAccountConcurrent(t, open(t)) })
	t.Run("SearchAccounts", func(t *testing.T) { testSearchAccounts(t, open(t)) })
	t.Run("DeleteSession", func(t *testing.T) { testDeleteSession(t, open(t)) })
	t.Run("Ping", func(t *testing.T) {
		if err := open(t).Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

// timePrecision is the precision at which the suite compares times.
const timePrecision = time.Microsecond

// equateTimes compares times at timePrecision, ignoring their location
// and monotonic reading.
var equateTimes = cmp.Comparer(func(x, y time.Time) bool {
	return x.Truncate(timePrecision).Equal(y.Truncate(timePrecision))
})

// wholeSecondNow returns a time for the suite to pass in: now, in whole
// seconds.
func wholeSecondNow() time.Time { return time.Now().UTC().Truncate(time.Second) }

// racers is the number of goroutines in the concurrent subtests.
const racers = 20

// wantCode fails the test unless err has the code (so, for a code other
// than EINTERNAL, unless err is or wraps a *sluice.Error).
func wantCode(t *testing.T, op string, err error, code string) {
	t.Helper()
	if got := sluice.ErrorCode(err); got != code {
		t.Errorf("%s: error %v (code %q), want code %q", op, err, got, code)
	}
}

// noSecrets fails the test if the text of err contains one of the secrets,
// as it is or in hex or base64.
func noSecrets(t *testing.T, op string, err error, secrets ...[]byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error() + " " + sluice.ErrorMessage(err)
	for _, s := range secrets {
		for _, form := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s),
			base64.RawURLEncoding.EncodeToString(s)} {
			if form != "" && strings.Contains(msg, form) {
				t.Errorf("%s: error %q contains a secret", op, msg)
			}
		}
	}
}

// createAccount creates an account from a copy of a and returns the copy.
func createAccount(t *testing.T, s sluice.AccountService, a sluice.Account) *sluice.Account {
	t.Helper()
	if err := s.CreateAccount(t.Context(), &a); err != nil {
		t.Fatalf("CreateAccount(%q): %v", a.Email, err)
	}
	return &a
}

// findAccount returns the account with the ID, failing the test if there is
// none.
func findAccount(t *testing.T, s sluice.AccountService, id int64) *sluice.Account {
	t.Helper()
	a, err := s.FindAccountByID(t.Context(), id)
	if err != nil {
		t.Fatalf("FindAccountByID(%d): %v", id, err)
	}
	return a
}

// wantAccount fails the test unless the stored account with want's ID is
// want.
func wantAccount(t *testing.T, s sluice.AccountService, want *sluice.Account) {
	t.Helper()
	if diff := cmp.Diff(want, findAccount(t, s, want.ID), equateTimes); diff != "" {
		t.Errorf("FindAccountByID(%d) mismatch (-want +got):\n%s", want.ID, diff)
	}
}

func createAPIKey(t *testing.T, s sluice.AccountService, accountID int64, name string) *sluice.APIKey {
	t.Helper()
	_, id, hash := sluice.NewAPIKey()
	k := &sluice.APIKey{ID: id, AccountID: accountID, Name: name, Hash: hash}
	if err := s.CreateAPIKey(t.Context(), k); err != nil {
		t.Fatalf("CreateAPIKey(%q): %v", name, err)
	}
	return k
}

func testCreateAccount(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	before := time.Now()
	a := &sluice.Account{Email: "alice@example.com", PasswordHash: "$argon2id$v=19$m=65536,t=1,p=4$c2FsdA$aGFzaA", Plan: "starter"}
	if err := s.CreateAccount(ctx, a); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	after := time.Now()
	if a.ID == 0 {
		t.Errorf("CreateAccount left ID 0")
	}
	// A sanity bound, loose enough for a database server with its own
	// clock: it catches a CreatedAt that is unset or in the wrong unit.
	if a.CreatedAt.Before(before.Add(-5*time.Minute)) || a.CreatedAt.After(after.Add(5*time.Minute)) {
		t.Errorf("CreatedAt = %v, want about %v", a.CreatedAt, before)
	}
	wantAccount(t, s, a)

	b := createAccount(t, s, sluice.Account{Email: "bob@example.com", Plan: "basic"})
	if b.ID == a.ID {
		t.Errorf("two accounts have ID %d", a.ID)
	}
	wantAccount(t, s, b)
	wantAccount(t, s, a)
}

func testCreateAccountFull(t *testing.T, s sluice.AccountService) {
	// Every field that CreateAccount stores, including a Telegram ID past
	// 32 bits and an override with an unlimited window.
	a := createAccount(t, s, sluice.Account{
		Email:        "carol@example.com",
		PasswordHash: "$argon2id$v=19$m=65536,t=1,p=4$c2FsdDI$aGFzaDI",
		Plan:         "elite",
		Override:     &sluice.LimitOverride{Hour: sluice.Unlimited, Day: 5000},
		TelegramID:   7_000_000_001,
	})
	wantAccount(t, s, a)

	got, err := s.FindAccountByTelegram(t.Context(), 7_000_000_001)
	if err != nil {
		t.Fatalf("FindAccountByTelegram: %v", err)
	}
	if diff := cmp.Diff(a, got, equateTimes); diff != "" {
		t.Errorf("FindAccountByTelegram mismatch (-want +got):\n%s", diff)
	}
}

func testFindAccountByEmail(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "Dave.Smith@Example.COM", Plan: "pro"})
	createAccount(t, s, sluice.Account{Email: "dave.smith@example.org", Plan: "pro"})

	for _, email := range []string{"Dave.Smith@Example.COM", "dave.smith@example.com", "DAVE.SMITH@EXAMPLE.COM"} {
		got, err := s.FindAccountByEmail(ctx, email)
		if err != nil {
			t.Errorf("FindAccountByEmail(%q): %v", email, err)
			continue
		}
		// The email is stored as given.
		if diff := cmp.Diff(a, got, equateTimes); diff != "" {
			t.Errorf("FindAccountByEmail(%q) mismatch (-want +got):\n%s", email, diff)
		}
	}
	for _, email := range []string{"dave.smith@example.net", "dave.smith", ""} {
		_, err := s.FindAccountByEmail(ctx, email)
		wantCode(t, "FindAccountByEmail("+email+")", err, sluice.ENOTFOUND)
	}
}

func testTelegramOnlyAccounts(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	// Accounts of the Telegram bot have no email; any number of them may
	// exist beside accounts with one.
	createAccount(t, s, sluice.Account{Email: "erin@example.com", Plan: "starter"})
	a := createAccount(t, s, sluice.Account{Plan: "starter", TelegramID: 1001})
	b := createAccount(t, s, sluice.Account{Plan: "starter", TelegramID: 1002})
	wantAccount(t, s, a)
	wantAccount(t, s, b)

	got, err := s.FindAccountByTelegram(ctx, 1002)
	if err != nil {
		t.Fatalf("FindAccountByTelegram(1002): %v", err)
	}
	if got.ID != b.ID {
		t.Errorf("FindAccountByTelegram(1002) = account %d, want %d", got.ID, b.ID)
	}
	_, err = s.FindAccountByEmail(ctx, "")
	wantCode(t, `FindAccountByEmail("")`, err, sluice.ENOTFOUND)
}

func testEmailTaken(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "frank@example.com", PasswordHash: "first-hash", Plan: "vip"})
	for _, email := range []string{"frank@example.com", "FRANK@example.com", "Frank@Example.Com"} {
		const secret = "$argon2id$v=19$m=65536,t=1,p=4$c2VjcmV0$c2VjcmV0aGFzaA"
		err := s.CreateAccount(ctx, &sluice.Account{Email: email, PasswordHash: secret, Plan: "starter"})
		wantCode(t, "CreateAccount("+email+")", err, sluice.EEMAILTAKEN)
		noSecrets(t, "CreateAccount("+email+")", err, []byte(secret))
	}
	// The first account is untouched.
	wantAccount(t, s, a)
}

func testAccountNotFound(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "grace@example.com", Plan: "starter", TelegramID: 2001})
	missing := a.ID + 1000

	_, err := s.FindAccountByID(ctx, missing)
	wantCode(t, "FindAccountByID", err, sluice.ENOTFOUND)
	_, err = s.FindAccountByEmail(ctx, "nobody@example.com")
	wantCode(t, "FindAccountByEmail", err, sluice.ENOTFOUND)
	_, err = s.FindAccountByTelegram(ctx, 2002)
	wantCode(t, "FindAccountByTelegram", err, sluice.ENOTFOUND)

	wantCode(t, "SetPlan", s.SetPlan(ctx, missing, "vip"), sluice.ENOTFOUND)
	wantCode(t, "SetOverride", s.SetOverride(ctx, missing, &sluice.LimitOverride{Hour: 1, Day: 2}), sluice.ENOTFOUND)
	wantCode(t, "SetOverride(nil)", s.SetOverride(ctx, missing, nil), sluice.ENOTFOUND)
	const secret = "$argon2id$v=19$m=65536,t=1,p=4$bm9wZQ$bm9wZWhhc2g"
	err = s.SetPassword(ctx, missing, secret)
	wantCode(t, "SetPassword", err, sluice.ENOTFOUND)
	noSecrets(t, "SetPassword", err, []byte(secret))
	// Linking a Telegram user to an account that does not exist leaves
	// the user with the account it has.
	wantCode(t, "LinkTelegram", s.LinkTelegram(ctx, missing, 2001), sluice.ENOTFOUND)
	wantAccount(t, s, a)
}

func testSetPlan(t *testing.T, s sluice.AccountService) {
	a := createAccount(t, s, sluice.Account{Email: "heidi@example.com", Plan: "starter"})
	b := createAccount(t, s, sluice.Account{Email: "ivan@example.com", Plan: "starter"})
	for _, plan := range []string{"vip", "elite", "starter"} {
		if err := s.SetPlan(t.Context(), a.ID, plan); err != nil {
			t.Fatalf("SetPlan(%q): %v", plan, err)
		}
		a.Plan = plan
		wantAccount(t, s, a)
	}
	wantAccount(t, s, b)
}

func testSetOverride(t *testing.T, s sluice.AccountService) {
	a := createAccount(t, s, sluice.Account{Email: "judy@example.com", Plan: "vip"})
	b := createAccount(t, s, sluice.Account{Email: "ken@example.com", Plan: "vip"})
	// Steps, each applied to the account left by the one before.
	for _, o := range []*sluice.LimitOverride{
		nil, // removing an override that does not exist
		{Hour: 10, Day: 100},
		{Hour: sluice.Unlimited, Day: 50},
		{Hour: 7, Day: sluice.Unlimited},
		{Hour: sluice.Unlimited, Day: sluice.Unlimited}, // unlimited, which is not the same as no override
		{Hour: 0, Day: 0}, // nothing at all, which is not the same as no override either
		nil,
		{Hour: 1 << 40, Day: 1 << 41},
	} {
		if err := s.SetOverride(t.Context(), a.ID, o); err != nil {
			t.Fatalf("SetOverride(%+v): %v", o, err)
		}
		a.Override = o
		wantAccount(t, s, a)
	}
	wantAccount(t, s, b)
}

func testSetPassword(t *testing.T, s sluice.AccountService) {
	a := createAccount(t, s, sluice.Account{Email: "leo@example.com", Plan: "starter"})
	b := createAccount(t, s, sluice.Account{Email: "mia@example.com", PasswordHash: "mia-hash", Plan: "starter"})
	for _, h := range []string{"$argon2id$v=19$m=65536,t=1,p=4$YQ$Yg", "$argon2id$v=19$m=65536,t=1,p=4$Yw$ZA", ""} {
		if err := s.SetPassword(t.Context(), a.ID, h); err != nil {
			t.Fatalf("SetPassword: %v", err)
		}
		a.PasswordHash = h
		wantAccount(t, s, a)
	}
	wantAccount(t, s, b)
}

func testLinkTelegram(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Plan: "starter", TelegramID: 3001}) // created by the bot
	b := createAccount(t, s, sluice.Account{Email: "nina@example.com", Plan: "vip"})
	c := createAccount(t, s, sluice.Account{Email: "oscar@example.com", Plan: "pro", TelegramID: 3002})

	wantTelegram := func(telegramID int64, want *sluice.Account) {
		t.Helper()
		got, err := s.FindAccountByTelegram(ctx, telegramID)
		if want == nil {
			wantCode(t, "FindAccountByTelegram", err, sluice.ENOTFOUND)
			return
		}
		if err != nil {
			t.Fatalf("FindAccountByTelegram(%d): %v", telegramID, err)
		}
		if diff := cmp.Diff(want, got, equateTimes); diff != "" {
			t.Errorf("FindAccountByTelegram(%d) mismatch (-want +got):\n%s", telegramID, diff)
		}
	}

	// Steps: link, then check every account.
	for _, step := range []struct {
		account    *sluice.Account
		telegramID int64
		from       *sluice.Account // the account that loses the Telegram user, if any
		free       int64           // a Telegram user that is now bound to no account
	}{
		{b, 3001, a, 0},    // the bot's user joins an account with an email
		{b, 3001, nil, 0},  // again: nothing changes
		{a, 3003, nil, 0},  // an account without a Telegram user gets one
		{b, 3002, c, 3001}, // b moves to another Telegram user, which c loses
		{c, 3001, nil, 0},
	} {
		if err := s.LinkTelegram(ctx, step.account.ID, step.telegramID); err != nil {
			t.Fatalf("LinkTelegram(%d, %d): %v", step.account.ID, step.telegramID, err)
		}
		step.account.TelegramID = step.telegramID
		if step.from != nil && step.from != step.account {
			step.from.TelegramID = 0
		}
		for _, x := range []*sluice.Account{a, b, c} {
			wantAccount(t, s, x)
		}
		wantTelegram(step.telegramID, step.account)
		if step.free != 0 {
			wantTelegram(step.free, nil)
		}
	}
	if t.Failed() {
		return
	}
	// Final state: a has 3003, b has 3002, c has 3001.
	wantTelegram(3001, c)
	wantTelegram(3002, b)
	wantTelegram(3003, a)
	wantTelegram(3004, nil)
}

func testAPIKeys(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "pat@example.com", Plan: "vip"})
	b := createAccount(t, s, sluice.Account{Email: "quinn@example.com", Plan: "vip"})

	before := time.Now()
	k1 := createAPIKey(t, s, a.ID, "laptop")
	if k1.CreatedAt.Before(before.Add(-5*time.Minute)) || k1.CreatedAt.After(time.Now().Add(5*time.Minute)) {
		t.Errorf("CreatedAt = %v, want about %v", k1.CreatedAt, before)
	}
	got, err := s.FindAPIKey(ctx, k1.ID)
	if err != nil {
		t.Fatalf("FindAPIKey: %v", err)
	}
	if diff := cmp.Diff(k1, got, equateTimes); diff != "" {
		t.Errorf("FindAPIKey mismatch (-want +got):\n%s", diff)
	}

	kb := createAPIKey(t, s, b.ID, "other account")
	k2 := createAPIKey(t, s, a.ID, "CI ✓")
	k3 := createAPIKey(t, s, a.ID, "")

	list := func(accountID int64, want []*sluice.APIKey) {
		t.Helper()
		got, err := s.ListAPIKeys(ctx, accountID)
		if err != nil {
			t.Fatalf("ListAPIKeys(%d): %v", accountID, err)
		}
		if len(want) == 0 && len(got) == 0 {
			return // nil and empty are the same list
		}
		if diff := cmp.Diff(want, got, equateTimes); diff != "" {
			t.Errorf("ListAPIKeys(%d) mismatch (-want +got):\n%s", accountID, diff)
		}
	}
	list(a.ID, []*sluice.APIKey{k1, k2, k3}) // oldest first
	list(b.ID, []*sluice.APIKey{kb})
	c := createAccount(t, s, sluice.Account{Email: "rita@example.com", Plan: "vip"})
	list(c.ID, nil)

	// A key is found by its lookup ID whatever its account.
	got, err = s.FindAPIKey(ctx, kb.ID)
	if err != nil {
		t.Fatalf("FindAPIKey: %v", err)
	}
	if diff := cmp.Diff(kb, got, equateTimes); diff != "" {
		t.Errorf("FindAPIKey mismatch (-want +got):\n%s", diff)
	}
	_, id, _ := sluice.NewAPIKey()
	_, err = s.FindAPIKey(ctx, id)
	wantCode(t, "FindAPIKey(unknown)", err, sluice.ENOTFOUND)
	_, err = s.FindAPIKey(ctx, "")
	wantCode(t, `FindAPIKey("")`, err, sluice.ENOTFOUND)
}

func testRevokeAPIKey(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "sam@example.com", Plan: "vip"})
	b := createAccount(t, s, sluice.Account{Email: "tina@example.com", Plan: "vip"})
	k1 := createAPIKey(t, s, a.ID, "one")
	k2 := createAPIKey(t, s, a.ID, "two")
	k3 := createAPIKey(t, s, a.ID, "three")
	now := wholeSecondNow()

	if err := s.RevokeAPIKey(ctx, a.ID, k2.ID, now); err != nil {
		t.Fatalf("RevokeAPIKey: %v", err)
	}
	k2.RevokedAt = now
	keys, err := s.ListAPIKeys(ctx, a.ID)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if diff := cmp.Diff([]*sluice.APIKey{k1, k3}, keys, equateTimes); diff != "" {
		t.Errorf("ListAPIKeys after revoking mismatch (-want +got):\n%s", diff)
	}
	// A revoked key is still found, with the time it was revoked.
	got, err := s.FindAPIKey(ctx, k2.ID)
	if err != nil {
		t.Fatalf("FindAPIKey(revoked): %v", err)
	}
	if diff := cmp.Diff(k2, got, equateTimes); diff != "" {
		t.Errorf("FindAPIKey(revoked) mismatch (-want +got):\n%s", diff)
	}

	// Revoking again, revoking a key of another account and revoking a
	// key that does not exist are ENOTFOUND and change nothing.
	wantCode(t, "RevokeAPIKey(revoked)", s.RevokeAPIKey(ctx, a.ID, k2.ID, now.Add(time.Hour)), sluice.ENOTFOUND)
	wantCode(t, "RevokeAPIKey(other account)", s.RevokeAPIKey(ctx, b.ID, k1.ID, now), sluice.ENOTFOUND)
	_, id, _ := sluice.NewAPIKey()
	wantCode(t, "RevokeAPIKey(unknown)", s.RevokeAPIKey(ctx, a.ID, id, now), sluice.ENOTFOUND)
	for _, want := range []*sluice.APIKey{k1, k2, k3} {
		got, err := s.FindAPIKey(ctx, want.ID)
		if err != nil {
			t.Fatalf("FindAPIKey: %v", err)
		}
		if diff := cmp.Diff(want, got, equateTimes); diff != "" {
			t.Errorf("FindAPIKey(%s) mismatch (-want +got):\n%s", want.Name, diff)
		}
	}
}

func testTouchAPIKey(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "uma@example.com", Plan: "vip"})
	k := createAPIKey(t, s, a.ID, "touched")
	other := createAPIKey(t, s, a.ID, "untouched")
	if !k.LastUsedAt.IsZero() {
		t.Errorf("new key: LastUsedAt = %v, want zero", k.LastUsedAt)
	}
	now := wholeSecondNow()
	for _, at := range []time.Time{now, now.Add(time.Minute), now.Add(90 * time.Minute)} {
		if err := s.TouchAPIKey(ctx, k.ID, at); err != nil {
			t.Fatalf("TouchAPIKey: %v", err)
		}
		k.LastUsedAt = at
		got, err := s.FindAPIKey(ctx, k.ID)
		if err != nil {
			t.Fatalf("FindAPIKey: %v", err)
		}
		if diff := cmp.Diff(k, got, equateTimes); diff != "" {
			t.Errorf("FindAPIKey after TouchAPIKey(%v) mismatch (-want +got):\n%s", at, diff)
		}
	}
	got, err := s.FindAPIKey(ctx, other.ID)
	if err != nil {
		t.Fatalf("FindAPIKey: %v", err)
	}
	if diff := cmp.Diff(other, got, equateTimes); diff != "" {
		t.Errorf("FindAPIKey(untouched) mismatch (-want +got):\n%s", diff)
	}
	_, id, _ := sluice.NewAPIKey()
	wantCode(t, "TouchAPIKey(unknown)", s.TouchAPIKey(ctx, id, now), sluice.ENOTFOUND)
}

func testSessions(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "vera@example.com", Plan: "starter"})
	now := wholeSecondNow()
	sess := &sluice.Session{
		TokenHash: sluice.HashToken(sluice.RandomString(32)),
		AccountID: a.ID,
		CreatedAt: now,
		ExpiresAt: now.Add(time.Hour),
	}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	// A session is valid before its expiry and expired from it on.
	for _, step := range []struct {
		now   time.Time
		found bool
	}{
		{now, true},
		{now.Add(time.Hour - time.Second), true},
		{now.Add(time.Hour - timePrecision), true},
		{now.Add(time.Hour), false},
		{now.Add(24 * time.Hour), false},
		{now, true}, // looking changes nothing
	} {
		got, err := s.FindSession(ctx, sess.TokenHash, step.now)
		if !step.found {
			wantCode(t, "FindSession(expired)", err, sluice.ENOTFOUND)
			noSecrets(t, "FindSession(expired)", err, sess.TokenHash)
			continue
		}
		if err != nil {
			t.Fatalf("FindSession at %v: %v", step.now, err)
		}
		if diff := cmp.Diff(sess, got, equateTimes); diff != "" {
			t.Errorf("FindSession at %v mismatch (-want +got):\n%s", step.now, diff)
		}
	}
	unknown := sluice.HashToken(sluice.RandomString(32))
	_, err := s.FindSession(ctx, unknown, now)
	wantCode(t, "FindSession(unknown)", err, sluice.ENOTFOUND)
	noSecrets(t, "FindSession(unknown)", err, unknown)
}

func testDeleteSessions(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "walt@example.com", Plan: "starter"})
	b := createAccount(t, s, sluice.Account{Email: "xena@example.com", Plan: "starter"})
	now := wholeSecondNow()
	newSession := func(accountID int64) *sluice.Session {
		t.Helper()
		sess := &sluice.Session{
			TokenHash: sluice.HashToken(sluice.RandomString(32)),
			AccountID: accountID,
			CreatedAt: now,
			ExpiresAt: now.Add(24 * time.Hour),
		}
		if err := s.CreateSession(ctx, sess); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
		return sess
	}
	a1, a2, b1 := newSession(a.ID), newSession(a.ID), newSession(b.ID)

	if err := s.DeleteSessions(ctx, a.ID); err != nil {
		t.Fatalf("DeleteSessions: %v", err)
	}
	for _, sess := range []*sluice.Session{a1, a2} {
		_, err := s.FindSession(ctx, sess.TokenHash, now)
		wantCode(t, "FindSession(deleted)", err, sluice.ENOTFOUND)
	}
	got, err := s.FindSession(ctx, b1.TokenHash, now)
	if err != nil {
		t.Fatalf("FindSession(other account): %v", err)
	}
	if diff := cmp.Diff(b1, got, equateTimes); diff != "" {
		t.Errorf("FindSession(other account) mismatch (-want +got):\n%s", diff)
	}
	// Ending the sessions of an account that has none is no error.
	if err := s.DeleteSessions(ctx, a.ID); err != nil {
		t.Errorf("DeleteSessions(no sessions): %v", err)
	}
	// A new login after that works.
	a3 := newSession(a.ID)
	if _, err := s.FindSession(ctx, a3.TokenHash, now); err != nil {
		t.Errorf("FindSession(new): %v", err)
	}
}

func testTokens(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "yuri@example.com", Plan: "starter"})
	b := createAccount(t, s, sluice.Account{Email: "zoe@example.com", Plan: "starter"})
	now := wholeSecondNow()
	expires := now.Add(time.Hour)
	reset := sluice.HashToken(sluice.RandomString(32))
	link := sluice.HashToken(sluice.RandomString(8))
	other := sluice.HashToken(sluice.RandomString(32))
	for _, tok := range []struct {
		kind    string
		hash    []byte
		account int64
	}{
		{sluice.TokenPasswordReset, reset, a.ID},
		{sluice.TokenTelegramLink, link, a.ID},
		{sluice.TokenPasswordReset, other, b.ID},
		// The same hash under another kind is another token.
		{sluice.TokenTelegramLink, other, a.ID},
	} {
		if err := s.CreateToken(ctx, tok.kind, tok.hash, tok.account, expires); err != nil {
			t.Fatalf("CreateToken(%s): %v", tok.kind, err)
		}
	}

	// Steps, each on the store the one before left.
	for _, step := range []struct {
		name string
		kind string
		hash []byte
		now  time.Time
		want int64 // 0: ENOTFOUND
	}{
		{"wrong kind", sluice.TokenTelegramLink, reset, now, 0},
		{"expired", sluice.TokenPasswordReset, reset, expires, 0},
		{"long expired", sluice.TokenPasswordReset, reset, expires.Add(time.Hour), 0},
		{"valid", sluice.TokenPasswordReset, reset, expires.Add(-timePrecision), a.ID},
		{"used", sluice.TokenPasswordReset, reset, now, 0},
		{"link", sluice.TokenTelegramLink, link, now, a.ID},
		{"link used", sluice.TokenTelegramLink, link, now, 0},
		{"unknown", sluice.TokenPasswordReset, sluice.HashToken("unknown"), now, 0},
		{"same hash, reset kind", sluice.TokenPasswordReset, other, now, b.ID},
		{"same hash, link kind", sluice.TokenTelegramLink, other, now, a.ID},
		{"same hash, reset kind, used", sluice.TokenPasswordReset, other, now, 0},
	} {
		got, err := s.ConsumeToken(ctx, step.kind, step.hash, step.now)
		if step.want == 0 {
			wantCode(t, "ConsumeToken("+step.name+")", err, sluice.ENOTFOUND)
			noSecrets(t, "ConsumeToken("+step.name+")", err, step.hash)
			continue
		}
		if err != nil {
			t.Errorf("ConsumeToken(%s): %v", step.name, err)
		} else if got != step.want {
			t.Errorf("ConsumeToken(%s) = account %d, want %d", step.name, got, step.want)
		}
	}
}

func testConsumeTokenConcurrent(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "race@example.com", Plan: "starter"})
	now := wholeSecondNow()
	hash := sluice.HashToken(sluice.RandomString(32))
	if err := s.CreateToken(ctx, sluice.TokenPasswordReset, hash, a.ID, now.Add(time.Hour)); err != nil {
		t.Fatalf("CreateToken: %v", err)
	}

	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		ids   = make([]int64, racers)
		errs  = make([]error, racers)
	)
	for i := range racers {
		wg.Go(func() {
			<-start
			ids[i], errs[i] = s.ConsumeToken(ctx, sluice.TokenPasswordReset, hash, now)
		})
	}
	close(start)
	wg.Wait()

	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
			if ids[i] != a.ID {
				t.Errorf("ConsumeToken = account %d, want %d", ids[i], a.ID)
			}
		case sluice.ErrorCode(err) != sluice.ENOTFOUND:
			t.Errorf("ConsumeToken: %v, want success or %s", err, sluice.ENOTFOUND)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent ConsumeToken calls succeeded, want 1", ok, racers)
	}
}

// testResetSpendsAllResetTokens checks that a password reset spends every
// reset token of its account, and nothing else: not the account's other
// kinds of tokens, not another account's.
func testResetSpendsAllResetTokens(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "ruth@example.com", Plan: "starter"})
	b := createAccount(t, s, sluice.Account{Email: "sam@example.com", Plan: "starter"})
	now := wholeSecondNow()
	first := sluice.HashToken(sluice.RandomString(32))
	second := sluice.HashToken(sluice.RandomString(32))
	third := sluice.HashToken(sluice.RandomString(32))
	link := sluice.HashToken(sluice.RandomString(8))
	others := sluice.HashToken(sluice.RandomString(32))
	for _, tok := range []struct {
		kind    string
		hash    []byte
		account int64
		expires time.Time
	}{
		{sluice.TokenPasswordReset, first, a.ID, now.Add(time.Hour)},
		{sluice.TokenPasswordReset, second, a.ID, now.Add(2 * time.Hour)},
		{sluice.TokenPasswordReset, third, a.ID, now.Add(time.Minute)},
		{sluice.TokenTelegramLink, link, a.ID, now.Add(time.Hour)},
		{sluice.TokenPasswordReset, others, b.ID, now.Add(time.Hour)},
	} {
		if err := s.CreateToken(ctx, tok.kind, tok.hash, tok.account, tok.expires); err != nil {
			t.Fatalf("CreateToken(%s): %v", tok.kind, err)
		}
	}
	for _, step := range []struct {
		name string
		kind string
		hash []byte
		want int64 // 0: ENOTFOUND
	}{
		{"reset with the second mail", sluice.TokenPasswordReset, second, a.ID},
		{"first mail, spent by the reset", sluice.TokenPasswordReset, first, 0},
		{"third mail, spent by the reset", sluice.TokenPasswordReset, third, 0},
		{"second mail, used", sluice.TokenPasswordReset, second, 0},
		{"link token of the account, untouched", sluice.TokenTelegramLink, link, a.ID},
		{"reset token of another account, untouched", sluice.TokenPasswordReset, others, b.ID},
	} {
		got, err := s.ConsumeToken(ctx, step.kind, step.hash, now)
		if step.want == 0 {
			wantCode(t, "ConsumeToken("+step.name+")", err, sluice.ENOTFOUND)
			continue
		}
		if err != nil {
			t.Errorf("ConsumeToken(%s): %v", step.name, err)
		} else if got != step.want {
			t.Errorf("ConsumeToken(%s) = account %d, want %d", step.name, got, step.want)
		}
	}
	// A reset token created after the reset is valid.
	fresh := sluice.HashToken(sluice.RandomString(32))
	if err := s.CreateToken(ctx, sluice.TokenPasswordReset, fresh, a.ID, now.Add(time.Hour)); err != nil {
		t.Fatalf("CreateToken(fresh): %v", err)
	}
	if got, err := s.ConsumeToken(ctx, sluice.TokenPasswordReset, fresh, now); err != nil || got != a.ID {
		t.Errorf("ConsumeToken(fresh) = %d, %v; want %d", got, err, a.ID)
	}
}

// testConsumeResetTokensConcurrent races different reset tokens of one
// account: one reset wins, the others find their tokens spent.
func testConsumeResetTokensConcurrent(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "tess@example.com", Plan: "starter"})
	now := wholeSecondNow()
	hashes := make([][]byte, racers)
	for i := range hashes {
		hashes[i] = sluice.HashToken(sluice.RandomString(32))
		if err := s.CreateToken(ctx, sluice.TokenPasswordReset, hashes[i], a.ID, now.Add(time.Hour)); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
	}
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, racers)
	)
	for i := range racers {
		wg.Go(func() {
			<-start
			_, errs[i] = s.ConsumeToken(ctx, sluice.TokenPasswordReset, hashes[i], now)
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case sluice.ErrorCode(err) != sluice.ENOTFOUND:
			t.Errorf("ConsumeToken: %v, want success or %s", err, sluice.ENOTFOUND)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d concurrent resets with different tokens of one account succeeded, want 1", ok, racers)
	}
}

// testTelegramTaken checks that an account cannot be created for a
// Telegram user already bound to another: a coded error, nothing stored.
func testTelegramTaken(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "uma@example.com", Plan: "vip", TelegramID: 3001})
	for _, b := range []sluice.Account{
		{Plan: "starter", TelegramID: 3001},
		{Email: "victor@example.com", Plan: "starter", TelegramID: 3001},
	} {
		err := s.CreateAccount(ctx, &b)
		wantCode(t, "CreateAccount(telegram 3001)", err, sluice.ETELEGRAMTAKEN)
	}
	_, err := s.FindAccountByEmail(ctx, "victor@example.com")
	wantCode(t, "FindAccountByEmail(victor)", err, sluice.ENOTFOUND)
	wantAccount(t, s, a)
}

func testCreateAccountConcurrent(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	var (
		wg       sync.WaitGroup
		start    = make(chan struct{})
		accounts = make([]*sluice.Account, racers)
		errs     = make([]error, racers)
	)
	for i := range racers {
		email := "same@example.com"
		if i%2 == 1 {
			email = "SAME@example.com"
		}
		accounts[i] = &sluice.Account{Email: email, Plan: "starter"}
		wg.Go(func() {
			<-start
			errs[i] = s.CreateAccount(ctx, accounts[i])
		})
	}
	close(start)
	wg.Wait()

	var winner *sluice.Account
	for i, err := range errs {
		switch {
		case err == nil:
			if winner != nil {
				t.Errorf("accounts %d and %d were both created with the same email", winner.ID, accounts[i].ID)
			}
			winner = accounts[i]
		case sluice.ErrorCode(err) != sluice.EEMAILTAKEN:
			t.Errorf("CreateAccount: %v, want success or %s", err, sluice.EEMAILTAKEN)
		}
	}
	if winner == nil {
		t.Fatalf("no concurrent CreateAccount call succeeded")
	}
	got, err := s.FindAccountByEmail(ctx, "same@example.com")
	if err != nil {
		t.Fatalf("FindAccountByEmail: %v", err)
	}
	if diff := cmp.Diff(winner, got, equateTimes); diff != "" {
		t.Errorf("FindAccountByEmail mismatch (-want +got):\n%s", diff)
	}
}

func testDeleteExpired(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "yuri@example.com", Plan: "starter"})
	now := wholeSecondNow()
	var live []byte
	for i, exp := range []time.Time{now.Add(-time.Hour), now, now.Add(time.Hour)} {
		h := sluice.HashToken(sluice.RandomString(32))
		if err := s.CreateSession(ctx, &sluice.Session{TokenHash: h, AccountID: a.ID, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: exp}); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
		if err := s.CreateToken(ctx, sluice.TokenPasswordReset, h, a.ID, exp); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		if i == 2 {
			live = h
		}
	}
	// Expired at now: the one an hour ago and the one that expires now,
	// for sessions and tokens alike.
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != 4 {
		t.Fatalf("DeleteExpired = %d, %v; want 4", n, err)
	}
	if n, err := s.DeleteExpired(ctx, now); err != nil || n != 0 {
		t.Fatalf("DeleteExpired again = %d, %v; want 0", n, err)
	}
	if _, err := s.FindSession(ctx, live, now); err != nil {
		t.Fatalf("FindSession(live): %v", err)
	}
	if id, err := s.ConsumeToken(ctx, sluice.TokenPasswordReset, live, now); err != nil || id != a.ID {
		t.Fatalf("ConsumeToken(live) = %d, %v", id, err)
	}
}
