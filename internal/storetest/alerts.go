package storetest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sluice "github.com/sluicehq/sluice"
)

// testSetMailAlerts: mail alerts are on by default, and SetMailAlerts turns
// them off and on for one account only.
func testSetMailAlerts(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Email: "alerts@example.com", Plan: "vip"})
	b := createAccount(t, s, sluice.Account{Email: "quiet@example.com", Plan: "vip", MailAlertsOff: true})
	wantAccount(t, s, a)
	wantAccount(t, s, b)
	for _, on := range []bool{false, false, true, false, true} {
		if err := s.SetMailAlerts(ctx, a.ID, on); err != nil {
			t.Fatalf("SetMailAlerts(%v): %v", on, err)
		}
		a.MailAlertsOff = !on
		wantAccount(t, s, a)
	}
	wantAccount(t, s, b)
	wantCode(t, "SetMailAlerts", s.SetMailAlerts(ctx, b.ID+1000, false), sluice.ENOTFOUND)
}

// RunAlertMarks runs the conformance suite of sluice.AlertMarks. Every call
// of open must return a new, empty store, and close it when the test ends.
// A store shared by several processes should also be run with open
// returning a second handle on the same store (the race subtest then races
// two handles).
func RunAlertMarks(t *testing.T, open func(t *testing.T) sluice.AlertMarks) {
	t.Run("Steps", func(t *testing.T) { testAlertMarkSteps(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testAlertMarkConcurrent(t, open(t)) })
}

func testAlertMarkSteps(t *testing.T, s sluice.AlertMarks) {
	ctx := t.Context()
	t0 := wholeSecondNow()
	mark := func(account int64, window string, threshold int, until time.Duration) sluice.AlertMark {
		return sluice.AlertMark{AccountID: account, Window: window, Threshold: threshold, Until: t0.Add(until)}
	}
	// Steps, each on the marks the ones before left.
	for i, st := range []struct {
		m    sluice.AlertMark
		now  time.Duration
		want bool
	}{
		{mark(1, "hour", 80, time.Hour), 0, true},
		{mark(1, "hour", 80, time.Hour), time.Second, false},               // holds
		{mark(1, "hour", 80, 2*time.Hour), time.Hour - time.Second, false}, // a second before it ends
		{mark(1, "hour", 100, time.Hour), 0, true},                         // another threshold
		{mark(1, "day", 80, 24*time.Hour), 0, true},                        // another window
		{mark(2, "hour", 80, time.Hour), 0, true},                          // another account
		{mark(1, "hour", 80, 2*time.Hour), time.Hour, true},                // expired exactly at its Until
		{mark(1, "hour", 80, 3*time.Hour), time.Hour + time.Minute, false}, // the new one holds
		{mark(1, "hour", 80, 3*time.Hour), 2*time.Hour - time.Second, false},
		{mark(1, "hour", 80, 3*time.Hour), 2 * time.Hour, true},
	} {
		got, err := s.MarkAlert(ctx, st.m, t0.Add(st.now))
		if err != nil {
			t.Fatalf("step %d: MarkAlert: %v", i, err)
		}
		if got != st.want {
			t.Errorf("step %d: MarkAlert(%+v, now+%s) = %v, want %v", i, st.m, st.now, got, st.want)
		}
	}
	// At now+2h: (1,hour,80) holds until +3h; (1,hour,100) and (2,hour,80)
	// ended at +1h; (1,day,80) holds until +24h.
	n, err := s.DeleteExpiredAlerts(ctx, t0.Add(2*time.Hour))
	if err != nil {
		t.Fatalf("DeleteExpiredAlerts: %v", err)
	}
	if n != 2 {
		t.Errorf("DeleteExpiredAlerts deleted %d marks, want 2", n)
	}
	if got, err := s.MarkAlert(ctx, mark(2, "hour", 80, 3*time.Hour), t0.Add(2*time.Hour)); err != nil || !got {
		t.Errorf("MarkAlert after its mark was deleted = %v, %v; want true", got, err)
	}
	if got, err := s.MarkAlert(ctx, mark(1, "day", 80, 48*time.Hour), t0.Add(2*time.Hour)); err != nil || got {
		t.Errorf("MarkAlert of a mark that holds = %v, %v; want false", got, err)
	}
}

// testAlertMarkConcurrent: of racers marking one key at once, exactly one
// wins, for each of several rounds.
func testAlertMarkConcurrent(t *testing.T, s sluice.AlertMarks) {
	t0 := wholeSecondNow()
	for round := range 3 {
		now := t0.Add(time.Duration(round) * time.Hour)
		m := sluice.AlertMark{AccountID: 7, Window: "day", Threshold: 100, Until: now.Add(time.Hour)}
		var wins atomic.Int64
		var wg sync.WaitGroup
		for range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := s.MarkAlert(t.Context(), m, now)
				if err != nil {
					t.Errorf("MarkAlert: %v", err)
				}
				if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Errorf("round %d: %d racers won the mark, want 1", round, n)
		}
	}
}

// testSetTelegramModel: an account has no Telegram model until one is set
// (at creation or by SetTelegramModel), which changes that account only.
func testSetTelegramModel(t *testing.T, s sluice.AccountService) {
	ctx := t.Context()
	a := createAccount(t, s, sluice.Account{Plan: "starter", TelegramID: 7101})
	b := createAccount(t, s, sluice.Account{Plan: "vip", TelegramID: 7102, TelegramModel: "sluice-ultra"})
	wantAccount(t, s, a)
	wantAccount(t, s, b)
	for _, m := range []string{"sluice-mosaic", "sluice-mosaic", "sluice-sketch", ""} {
		if err := s.SetTelegramModel(ctx, a.ID, m); err != nil {
			t.Fatalf("SetTelegramModel(%q): %v", m, err)
		}
		a.TelegramModel = m
		wantAccount(t, s, a)
		if got, err := s.FindAccountByTelegram(ctx, 7101); err != nil || got.TelegramModel != m {
			t.Fatalf("FindAccountByTelegram after SetTelegramModel(%q): %+v, %v", m, got, err)
		}
	}
	wantAccount(t, s, b)
	wantCode(t, "SetTelegramModel", s.SetTelegramModel(ctx, b.ID+1000, "x"), sluice.ENOTFOUND)
}
