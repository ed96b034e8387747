package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	sluice "github.com/sluicehq/sluice"
)

// testSearchAccounts checks sluice.AccountSearcher, which every account
// store implements beside sluice.AccountService.
func testSearchAccounts(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	search, ok := s.(sluice.AccountSearcher)
	if !ok {
		t.Fatalf("%T does not implement sluice.AccountSearcher", s)
	}
	a1 := createAccount(t, s, sluice.Account{Email: "Ann@Example.com"})
	a2 := createAccount(t, s, sluice.Account{Email: "bob@example.org", Plan: "vip"})
	a3 := createAccount(t, s, sluice.Account{TelegramID: 4242}) // no email
	a4 := createAccount(t, s, sluice.Account{Email: "under_score%@example.com"})
	ids := func(as []*sluice.Account) []int64 {
		out := []int64{}
		for _, a := range as {
			out = append(out, a.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    sluice.AccountQuery
		want []int64
	}{
		{"all", sluice.AccountQuery{}, []int64{a1.ID, a2.ID, a3.ID, a4.ID}},
		{"case-insensitive part of an email", sluice.AccountQuery{Text: "EXAMPLE.COM"}, []int64{a1.ID, a4.ID}},
		{"surrounding space", sluice.AccountQuery{Text: "  bob@ "}, []int64{a2.ID}},
		{"by id", sluice.AccountQuery{Text: itoa(a3.ID)}, []int64{a3.ID}},
		{"LIKE wildcards are literal", sluice.AccountQuery{Text: "_"}, []int64{a4.ID}},
		{"percent is literal", sluice.AccountQuery{Text: "%"}, []int64{a4.ID}},
		{"backslash is literal", sluice.AccountQuery{Text: `\`}, []int64{}},
		{"nothing", sluice.AccountQuery{Text: "nobody"}, []int64{}},
		{"first page", sluice.AccountQuery{Limit: 2}, []int64{a1.ID, a2.ID}},
		{"next page", sluice.AccountQuery{Limit: 2, After: a2.ID}, []int64{a3.ID, a4.ID}},
		{"past the end", sluice.AccountQuery{After: a4.ID}, []int64{}},
	} {
		got, err := search.SearchAccounts(ctx, tc.q)
		if err != nil {
			t.Errorf("%s: SearchAccounts(%+v): %v", tc.name, tc.q, err)
			continue
		}
		if diff := cmp.Diff(tc.want, ids(got)); diff != "" {
			t.Errorf("%s: SearchAccounts(%+v) IDs (-want +got):\n%s", tc.name, tc.q, diff)
		}
	}
	// A found account is the account, as FindAccountByID returns it.
	got, err := search.SearchAccounts(ctx, sluice.AccountQuery{Text: "bob"})
	if err != nil || len(got) != 1 {
		t.Fatalf("SearchAccounts(bob) = %v, %v", got, err)
	}
	if diff := cmp.Diff(findAccount(t, s, a2.ID), got[0], equateTimes); diff != "" {
		t.Errorf("found account (-want +got):\n%s", diff)
	}
}

func itoa(v int64) string {
	var b [20]byte
	i := len(b)
	for v > 0 || i == len(b) {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b[i:])
}

// testDeleteSession checks sluice.SessionEnder: one session ends, the
// account's others stay.
func testDeleteSession(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	ender, ok := s.(sluice.SessionEnder)
	if !ok {
		t.Fatalf("%T does not implement sluice.SessionEnder", s)
	}
	a := createAccount(t, s, sluice.Account{Email: "yves@example.com"})
	now := wholeSecondNow()
	var sessions []*sluice.Session
	for range 2 {
		sess := &sluice.Session{TokenHash: sluice.HashToken(sluice.RandomString(32)), AccountID: a.ID,
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := s.CreateSession(ctx, sess); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
		sessions = append(sessions, sess)
	}
	if err := ender.DeleteSession(ctx, sessions[0].TokenHash); err != nil {
		t.Fatalf("DeleteSession: %v", err)
	}
	_, err := s.FindSession(ctx, sessions[0].TokenHash, now)
	wantCode(t, "FindSession(ended)", err, sluice.ENOTFOUND)
	if _, err := s.FindSession(ctx, sessions[1].TokenHash, now); err != nil {
		t.Fatalf("FindSession(the other session): %v", err)
	}
	if err := ender.DeleteSession(ctx, sessions[0].TokenHash); err != nil {
		t.Fatalf("DeleteSession again: %v", err)
	}
}
