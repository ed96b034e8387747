package sqlite

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	sluice "github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/storetest"
)

func TestAccountService(t *testing.T) {
	storetest.RunAccountService(t, func(t *testing.T) sluice.AccountService {
		return mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	})
}

func TestAuditLog(t *testing.T) {
	storetest.RunAuditLog(t, func(t *testing.T) storetest.AuditStore {
		return mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	}, func(t *testing.T, s storetest.AuditStore) {
		if _, err := s.(*DB).w.ExecContext(t.Context(), `DROP TABLE audit_events`); err != nil {
			t.Fatal(err)
		}
	})
}

// mustOpen opens the database at path and closes it when the test ends.
func mustOpen(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// versions returns the versions in schema_migrations, in order.
func versions(t *testing.T, db *DB) []int {
	t.Helper()
	rows, err := db.r.QueryContext(t.Context(), `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatalf("select versions: %v", err)
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			t.Fatalf("scan version: %v", err)
		}
		vs = append(vs, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("select versions: %v", err)
	}
	return vs
}

func allVersions() []int {
	var vs []int
	for i := range migrations {
		vs = append(vs, i+1)
	}
	return vs
}

func TestOpen_reopenKeepsDataAndMigratesOnce(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "data", "sluice.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}

	db, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if diff := cmp.Diff(allVersions(), versions(t, db)); diff != "" {
		t.Errorf("versions after first open (-want +got):\n%s", diff)
	}
	a := &sluice.Account{Email: "keep@example.com", Plan: "vip", Override: &sluice.LimitOverride{Hour: 3, Day: sluice.Unlimited}}
	if err := db.CreateAccount(ctx, a); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	_, id, hash := sluice.NewAPIKey()
	k := &sluice.APIKey{ID: id, AccountID: a.ID, Name: "kept", Hash: hash}
	if err := db.CreateAPIKey(ctx, k); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	} else if fi.Size() == 0 {
		t.Fatalf("database file is empty after Close")
	}

	for range 2 {
		db := mustOpen(t, path)
		if diff := cmp.Diff(allVersions(), versions(t, db)); diff != "" {
			t.Errorf("versions after reopening (-want +got):\n%s", diff)
		}
		// Exact to the nanosecond: no comparer for times.
		got, err := db.FindAccountByEmail(ctx, "KEEP@example.com")
		if err != nil {
			t.Fatalf("FindAccountByEmail after reopening: %v", err)
		}
		if diff := cmp.Diff(a, got); diff != "" {
			t.Errorf("account after reopening (-want +got):\n%s", diff)
		}
		gotKey, err := db.FindAPIKey(ctx, k.ID)
		if err != nil {
			t.Fatalf("FindAPIKey after reopening: %v", err)
		}
		if diff := cmp.Diff(k, gotKey); diff != "" {
			t.Errorf("key after reopening (-want +got):\n%s", diff)
		}
		if err := db.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func TestOpen_pragmas(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	ctx := t.Context()
	for _, c := range []struct {
		db     string
		pragma string
		want   string
	}{
		{"w", "journal_mode", "wal"},
		{"r", "journal_mode", "wal"},
		{"w", "foreign_keys", "1"},
		{"r", "foreign_keys", "1"},
		{"w", "busy_timeout", "5000"},
		{"r", "busy_timeout", "5000"},
		{"w", "query_only", "0"},
		{"r", "query_only", "1"},
	} {
		pool := db.w
		if c.db == "r" {
			pool = db.r
		}
		var got string
		if err := pool.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", c.pragma, err)
		}
		if got != c.want {
			t.Errorf("%s: PRAGMA %s = %q, want %q", c.db, c.pragma, got, c.want)
		}
	}
}

func TestOpen_oddPath(t *testing.T) {
	// A path with characters that mean something in a URI still names a file.
	path := filepath.Join(t.TempDir(), "a dir?x=1#frag", "50% of sluice.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	db := mustOpen(t, path)
	if err := db.CreateAccount(t.Context(), &sluice.Account{Email: "odd@example.com"}); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database file: %v", err)
	}
}

func TestOpen_errors(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	for _, path := range []string{"", ":memory:", filepath.Join(dir, "missing", "sluice.db"), dir} {
		db, err := Open(ctx, path)
		if err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
	notDB := filepath.Join(dir, "not.db")
	if err := os.WriteFile(notDB, []byte("this is not a database file, not even close to one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(ctx, notDB); err == nil {
		db.Close()
		t.Errorf("Open(not a database) succeeded, want an error")
	}
}

func TestMigrate_failedStepRollsBack(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	ctx := t.Context()
	steps := append(append([]string{}, migrations...),
		`CREATE TABLE extra (x INTEGER) STRICT`,
		`CREATE TABLE half (x INTEGER) STRICT; THIS IS NOT SQL`,
	)
	if err := migrate(ctx, db.w, steps); err == nil {
		t.Fatalf("migrate with a bad step succeeded")
	}
	want := append(allVersions(), len(migrations)+1)
	if diff := cmp.Diff(want, versions(t, db)); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
	var n int
	if err := db.r.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE name = 'half'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("the failed step left its table behind")
	}
	// Fixed, the step applies; the ones before are not applied again.
	steps[len(steps)-1] = `CREATE TABLE half (x INTEGER) STRICT`
	if err := migrate(ctx, db.w, steps); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	want = append(want, len(migrations)+2)
	if diff := cmp.Diff(want, versions(t, db)); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
}

// TestCreateAccount_defaultPlan checks a detail of this store: an account
// created without a plan gets the default plan.
func TestCreateAccount_defaultPlan(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	a := &sluice.Account{Email: "new@example.com"}
	if err := db.CreateAccount(t.Context(), a); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	if a.Plan != sluice.DefaultPlan {
		t.Errorf("Plan = %q, want %q", a.Plan, sluice.DefaultPlan)
	}
	got, err := db.FindAccountByID(t.Context(), a.ID)
	if err != nil {
		t.Fatalf("FindAccountByID: %v", err)
	}
	if got.Plan != sluice.DefaultPlan {
		t.Errorf("stored Plan = %q, want %q", got.Plan, sluice.DefaultPlan)
	}
}

// TestConcurrentReadsAndWrites runs readers and writers on one file at once:
// none may fail with SQLITE_BUSY or anything else.
func TestConcurrentReadsAndWrites(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	ctx := t.Context()
	a := &sluice.Account{Email: "busy@example.com", Plan: "vip"}
	if err := db.CreateAccount(ctx, a); err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	_, id, hash := sluice.NewAPIKey()
	if err := db.CreateAPIKey(ctx, &sluice.APIKey{ID: id, AccountID: a.ID, Name: "busy", Hash: hash}); err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}

	const (
		goroutines = 8
		iterations = 300
	)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			for i := range iterations {
				var err error
				switch (g + i) % 4 {
				case 0:
					err = db.TouchAPIKey(ctx, id, start.Add(time.Duration(g*iterations+i)))
				case 1:
					err = db.SetPlan(ctx, a.ID, "vip")
				case 2:
					_, err = db.FindAPIKey(ctx, id)
				default:
					_, err = db.FindAccountByID(ctx, a.ID)
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent reads and writes: %v", err)
	}
}

func TestAlertMarks(t *testing.T) {
	storetest.RunAlertMarks(t, func(t *testing.T) sluice.AlertMarks {
		return mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	})
}
func TestIdempotencyStore(t *testing.T) {
	storetest.RunIdempotencyStore(t, func(t *testing.T) (sluice.IdempotencyStore, func() sluice.IdempotencyStore) {
		path := filepath.Join(t.TempDir(), "sluice.db")
		return mustOpen(t, path).Idempotency(), func() sluice.IdempotencyStore { return mustOpen(t, path).Idempotency() }
	})
}

// BenchmarkIdempotency measures the idempotency store's calls with answers
// of one demo image (24 KiB) and of a large upstream answer (4 MiB). Run it
// with a count: -benchtime=200x.
func BenchmarkIdempotency(b *testing.B) {
	for _, size := range []int{24 << 10, 4 << 20} {
		b.Run(strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
			db, err := Open(b.Context(), filepath.Join(b.TempDir(), "sluice.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			storetest.BenchmarkIdempotencyStore(b, db.Idempotency(), size)
		})
	}
}

// BenchmarkIdempotencyRecordBytes reports what a kept answer costs in the
// file beyond its body (bytes/record), from the file's pages before and
// after 1,000 records with a 24 KiB body. Run it once: -benchtime=1x.
func BenchmarkIdempotencyRecordBytes(b *testing.B) {
	const n, body = 1000, 24 << 10
	db, err := Open(b.Context(), filepath.Join(b.TempDir(), "sluice.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	size := func() int64 {
		var pages, pageSize int64
		db.w.QueryRowContext(b.Context(), `PRAGMA page_count`).Scan(&pages)
		db.w.QueryRowContext(b.Context(), `PRAGMA page_size`).Scan(&pageSize)
		return pages * pageSize
	}
	var total int64
	for b.Loop() {
		before := size()
		storetest.FillIdempotencyStore(b, db.Idempotency(), n, body)
		db.w.ExecContext(b.Context(), `PRAGMA wal_checkpoint(TRUNCATE)`)
		total += size() - before
	}
	b.ReportMetric(float64(total)/float64(b.N*n)-body, "overhead-bytes/record")
}
func TestUsageStore(t *testing.T) {
	storetest.RunUsageStore(t, func(t *testing.T) sluice.UsageStore {
		return mustOpen(t, filepath.Join(t.TempDir(), "sluice.db"))
	})
}

func TestBotUpdateStore(t *testing.T) {
	storetest.RunBotUpdateStore(t, func(t *testing.T) (sluice.BotUpdateStore, func() sluice.BotUpdateStore) {
		path := filepath.Join(t.TempDir(), "sluice.db")
		return mustOpen(t, path).BotUpdates(), func() sluice.BotUpdateStore { return mustOpen(t, path).BotUpdates() }
	})
}

// BenchmarkBotUpdates measures the bot's journal calls. Run it with a
// count: -benchtime=2000x.
func BenchmarkBotUpdates(b *testing.B) {
	db, err := Open(b.Context(), filepath.Join(b.TempDir(), "sluice.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	storetest.BenchmarkBotUpdateStore(b, db.BotUpdates())
}
