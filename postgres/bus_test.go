package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/postgres"
)

type received chan sluice.Invalidation

func subscribe(t *testing.T, b *postgres.Bus) received {
	ch := make(received, 100)
	t.Cleanup(b.Subscribe(func(inv sluice.Invalidation) { ch <- inv }))
	return ch
}

func (r received) next(t *testing.T, what string) sluice.Invalidation {
	t.Helper()
	select {
	case inv := <-r:
		return inv
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: nothing delivered within 5s", what)
		return sluice.Invalidation{}
	}
}

func (r received) none(t *testing.T, what string) {
	t.Helper()
	select {
	case inv := <-r:
		t.Fatalf("%s: delivered %+v, want nothing", what, inv)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestBus: two instances on one schema hear each other's notifications,
// not their own; another schema (another deployment) hears nothing; a
// listener whose connection is killed listens again and says so with
// InvalidateAll.
func TestBus(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) }) // first registered: runs last
	ctx := context.Background()
	url, schema := testenv.PostgresSchema(t)
	otherURL, _ := testenv.PostgresSchema(t)
	dbs := []*postgres.DB{open(t, url), open(t, url), open(t, otherURL)}
	a, b, other := postgres.NewBus(dbs[0], nil), postgres.NewBus(dbs[1], nil), postgres.NewBus(dbs[2], nil)
	for _, bus := range []*postgres.Bus{a, b, other} {
		t.Cleanup(func() { bus.Close() })
	}
	ra, rb, ro := subscribe(t, a), subscribe(t, b), subscribe(t, other)
	all := sluice.Invalidation{Kind: sluice.InvalidateAll}
	for name, r := range map[string]received{"a": ra, "b": rb, "other": ro} {
		if got := r.next(t, name+" listens"); got != all {
			t.Fatalf("%s's first delivery %+v, want %+v", name, got, all)
		}
	}
	steps := []struct {
		from *postgres.Bus
		to   received
		inv  sluice.Invalidation
	}{
		{a, rb, sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: "42"}},
		{b, ra, sluice.Invalidation{Kind: sluice.InvalidateAPIKey, ID: "key 1"}},
	}
	for i, s := range steps {
		if err := s.from.Publish(ctx, s.inv); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if diff := cmp.Diff(s.inv, s.to.next(t, "receiver")); diff != "" {
			t.Fatalf("step %d (-want +got):\n%s", i, diff)
		}
	}
	ra.none(t, "a, its own")
	rb.none(t, "b, its own")
	ro.none(t, "another schema")

	conn, err := pgx.Connect(ctx, url) // the test's own
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Kill b's listening connection: it listens again.
	var channel string
	if err := conn.QueryRow(ctx, `SELECT 'sluice_invalidate_' || left(md5($1), 16)`, schema).Scan(&channel); err != nil {
		t.Fatal(err)
	}
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`,
		"sluice bus "+channel).Scan(&killed); err != nil || killed != 2 {
		t.Fatalf("killed %d listeners (want a's and b's): %v", killed, err)
	}
	for name, r := range map[string]received{"a": ra, "b": rb} {
		if got := r.next(t, name+" listens again"); got != all {
			t.Fatalf("%s after its connection was killed: %+v, want %+v", name, got, all)
		}
	}
	inv := sluice.Invalidation{Kind: sluice.InvalidateAccount, ID: "7"}
	if err := a.Publish(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if got := rb.next(t, "after the reconnection"); got != inv {
		t.Fatalf("after the reconnection: %+v, want %+v", got, inv)
	}
}
