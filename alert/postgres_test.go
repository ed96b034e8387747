package alert_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/alert"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
)

// openDB opens a DB on url (another pool, as another instance would),
// closed when t ends.
func openDB(t *testing.T, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestTwoInstances: two Notifiers on one PostgreSQL, each handed the same
// decisions at the same time, send each alert once between them.
func TestTwoInstances(t *testing.T) {
	url, _ := testenv.PostgresSchema(t)
	dbs := []*postgres.DB{openDB(t, url), openDB(t, url)}
	const secret = "two instances"
	h := newHook(t, secret, nil)
	mails := []*mailer{{}, {}}
	var ns []*alert.Notifier
	for i, db := range dbs {
		n := &alert.Notifier{Accounts: db, Marks: db, Plans: sluice.DefaultPlans(), Mailer: mails[i],
			WebhookURL: h.srv.URL, WebhookSecret: secret}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		ns = append(ns, n)
	}
	const accounts = 10
	t0 := time.Date(2026, 3, 1, 15, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for i := range accounts {
		a := &sluice.Account{Email: "racer" + itoa(i) + "@example.com", Plan: "starter"}
		if err := dbs[0].CreateAccount(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		// 4 of 5 (80 %), then 5 of 5 (100 %) a second later.
		ds := []sluice.Decision{decision(t0, 5, 1), decision(t0.Add(time.Second), 5, 0)}
		for _, n := range ns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range ds {
					units := int64(4)
					if j == 1 {
						units = 1
					}
					n.Record(&sluice.UsageEvent{AccountID: a.ID, Plan: a.Plan, Outcome: sluice.UsageAdmitted, Units: units, Decision: &ds[j]})
				}
			}()
		}
	}
	wg.Wait()
	for _, n := range ns {
		if err := n.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := h.wait(0)
	if len(got) != 2*accounts {
		t.Errorf("%d webhooks, want %d (one per threshold per account)", len(got), 2*accounts)
	}
	seen := map[[2]int64]int{}
	for _, p := range got {
		seen[[2]int64{p.AccountID, int64(p.Threshold)}]++
	}
	for k, c := range seen {
		if c != 1 {
			t.Errorf("account %d, threshold %d: %d webhooks, want 1", k[0], k[1], c)
		}
	}
	if n := len(mails[0].texts()) + len(mails[1].texts()); n != 2*accounts {
		t.Errorf("%d mails, want %d", n, 2*accounts)
	}
}

// decision is an admitted decision at t of a one-window hourly policy.
func decision(t time.Time, limit, remaining int64) sluice.Decision {
	d := sluice.Decision{Allowed: true, Time: t, Blocking: -1, N: 1}
	d.Windows[0] = sluice.WindowStatus{Name: "hour", Length: time.Hour, Limit: sluice.Limit(limit), Remaining: remaining, Counted: limit - remaining, Reset: t.Add(time.Hour)}
	return d
}

func itoa(i int) string { return string(rune('a' + i)) }
