package inmem_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/inmem"
	"github.com/sluicehq/sluice/internal/storetest"
)

// The suite decides at times far from the wall clock's; the store sweeps
// itself every millisecond meanwhile, which must evict nothing that counts
// at the callers' times.
func TestConformance(t *testing.T) {
	storetest.RunQuotaStore(t, func(t *testing.T) sluice.QuotaStore {
		s := inmem.New(inmem.Options{SweepInterval: time.Millisecond})
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestConformancePersistent(t *testing.T) {
	for _, every := range []time.Duration{0, time.Second} {
		t.Run(every.String(), func(t *testing.T) {
			storetest.RunQuotaStore(t, func(t *testing.T) sluice.QuotaStore {
				s, err := inmem.Open(context.Background(), filepath.Join(t.TempDir(), "quota.db"), every, inmem.Options{SweepInterval: time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}

var hourDay = sluice.Policy{Windows: []sluice.Window{
	{Name: "hour", Length: time.Hour, Limit: 100},
	{Name: "day", Length: 24 * time.Hour, Limit: 1000},
}}

func TestEviction(t *testing.T) {
	ctx := context.Background()
	s := inmem.New(inmem.Options{})
	defer s.Close()
	now := time.Now()
	short := sluice.Policy{Windows: []sluice.Window{{Name: "minute", Length: time.Minute, Limit: 5}}}
	for i := range 1000 {
		if _, err := s.Take(ctx, "k"+string(rune('a'+i%26))+string(rune(i)), &short, 1, now); err != nil {
			t.Fatal(err)
		}
	}
	s.Take(ctx, "long", &hourDay, 1, now)
	if got := s.Len(); got != 1001 {
		t.Fatalf("len = %d, want 1001", got)
	}
	s.Sweep(now.Add(59 * time.Second))
	if got := s.Len(); got != 1001 {
		t.Fatalf("after 59s: len = %d, want 1001 (nothing expired yet)", got)
	}
	s.Sweep(now.Add(61 * time.Second))
	if got := s.Len(); got != 1 {
		t.Fatalf("after 61s: len = %d, want 1 (the day key)", got)
	}
	// A rejected take on a new key keeps nothing.
	tiny := sluice.Policy{Windows: []sluice.Window{{Name: "minute", Length: time.Minute, Limit: 1}}}
	s.Take(ctx, "never", &tiny, 2, now)
	s.Sweep(now)
	if got := s.Len(); got != 1 {
		t.Fatalf("after a rejected take: len = %d, want 1", got)
	}
}

func TestRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quota.db")
	now := time.Now()
	for _, every := range []time.Duration{0, time.Hour} { // an hour: only Close flushes
		t.Run(every.String(), func(t *testing.T) {
			s, err := inmem.Open(ctx, path, every, inmem.Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Reset(ctx, "acct")
			for range 7 {
				s.Take(ctx, "acct", &hourDay, 1, now)
			}
			d, _ := s.Take(ctx, "acct", &hourDay, 2, now)
			s.Refund(ctx, "acct", &hourDay, 2, d.Time, now)
			s.Take(ctx, "gone", &hourDay, 1, now)
			s.Reset(ctx, "gone")
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = inmem.Open(ctx, path, every, inmem.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			d, _ = s.Peek(ctx, "acct", &hourDay, now)
			if d.Windows[0].Remaining != 93 || d.Windows[1].Remaining != 993 {
				t.Fatalf("after restart: remaining %d/%d, want 93/993", d.Windows[0].Remaining, d.Windows[1].Remaining)
			}
			if d, _ := s.Peek(ctx, "gone", &hourDay, now); d.Windows[0].Remaining != 100 {
				t.Fatalf("a reset key came back: remaining %d", d.Windows[0].Remaining)
			}
		})
	}
}

// TestSync: Sync writes one key's counters at once on a store that
// flushes periodically, leaving the other keys to the flush; a key with no
// unwritten change is not written again; a failed write keeps the key for
// the next flush. A store that writes every change, or none, syncs at once.
func TestSync(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quota.db")
	now := time.Now()
	s, err := inmem.Open(ctx, path, time.Hour, inmem.Options{}) // only Sync, Flush and Close write
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// onDisk returns the hour's remaining units of key in the file.
	onDisk := func(key string) int64 {
		t.Helper()
		other, err := inmem.Open(ctx, path, time.Hour, inmem.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		d, err := other.Peek(ctx, key, &hourDay, now)
		if err != nil {
			t.Fatal(err)
		}
		return d.Windows[0].Remaining
	}
	s.Take(ctx, "a", &hourDay, 3, now)
	s.Take(ctx, "b", &hourDay, 1, now)
	if r := onDisk("a"); r != 100 {
		t.Fatalf("before Sync: %d left on disk, want 100 (nothing written)", r)
	}
	if err := s.Sync(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if a, b := onDisk("a"), onDisk("b"); a != 97 || b != 100 {
		t.Fatalf("after Sync(a): a %d, b %d left on disk; want 97 and 100", a, b)
	}
	// Nothing to write: no write is tried (it would fail).
	if err := inmem.FailWritesForTest(path, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(ctx, "a"); err != nil {
		t.Fatalf("Sync of a key already written: %v", err)
	}
	if err := s.Sync(ctx, "never-taken"); err != nil {
		t.Fatalf("Sync of an unknown key: %v", err)
	}
	s.Take(ctx, "a", &hourDay, 2, now)
	if err := s.Sync(ctx, "a"); err == nil {
		t.Fatal("Sync with failing writes: no error")
	}
	if err := inmem.FailWritesForTest(path, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if a, b := onDisk("a"), onDisk("b"); a != 95 || b != 99 {
		t.Fatalf("after a failed Sync and a flush: a %d, b %d left on disk; want 95 and 99", a, b)
	}

	writesAll, err := inmem.Open(ctx, filepath.Join(t.TempDir(), "sync.db"), 0, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]*inmem.Store{"in memory": inmem.New(inmem.Options{}), "flush interval 0": writesAll} {
		st.Take(ctx, "a", &hourDay, 1, now)
		if err := st.Sync(ctx, "a"); err != nil {
			t.Errorf("%s: Sync: %v", name, err)
		}
		st.Close()
	}
}

// TestSyncConcurrent: takes, syncs and flushes at once on a persistent
// store; after a last sync of every key (no flush, no Close), another store
// on the file holds what memory holds.
func TestSyncConcurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quota.db")
	now := time.Now()
	s, err := inmem.Open(ctx, path, time.Hour, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const keys, takes = 20, 200
	key := func(i int) string { return fmt.Sprintf("{acct:%d}", i) }
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range takes {
				k := key((g*takes + i) % keys)
				if _, err := s.Take(ctx, k, &hourDay, 1, now); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if err := s.Sync(ctx, k); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 20 {
			if err := s.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	for i := range keys {
		if err := s.Sync(ctx, key(i)); err != nil {
			t.Fatal(err)
		}
	}
	other, err := inmem.Open(ctx, path, time.Hour, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i := range keys {
		mem, _ := s.Peek(ctx, key(i), &hourDay, now)
		disk, _ := other.Peek(ctx, key(i), &hourDay, now)
		if want := int64(100 - 4*takes/keys); mem.Windows[0].Remaining != want || disk.Windows[0].Remaining != want {
			t.Fatalf("%s: %d left in memory, %d on disk; want %d", key(i), mem.Windows[0].Remaining, disk.Windows[0].Remaining, want)
		}
	}
}

// TestCompactAfterSpike: a spike of keys (a flood of addresses on a per-IP
// limit) that then expire gives the arena's slots back at the sweep, and
// the keys still held keep their counts and take charges as before.
func TestCompactAfterSpike(t *testing.T) {
	ctx := context.Background()
	s := inmem.New(inmem.Options{SweepInterval: time.Hour})
	defer s.Close()
	now := time.Unix(1_800_000_000, 0)
	perIP := sluice.Policy{Windows: []sluice.Window{{Name: "minute", Length: time.Minute, Limit: 10}}}
	account := func(i int) string { return fmt.Sprintf("{acct:%d}", i) }
	for i := range 100_000 {
		s.Take(ctx, fmt.Sprintf("{ip:%d}", i), &perIP, 1, now)
		if i%100 == 0 {
			s.Take(ctx, account(i/100), &hourDay, int64(1+i/100%5), now)
		}
	}
	if n := s.ArenaSlots(); n < 101_000 {
		t.Fatalf("%d slots for 101,000 keys", n)
	}
	s.Sweep(now.Add(2 * time.Minute))
	if n, keys := s.ArenaSlots(), s.Len(); keys != 1000 || n > 1536 {
		t.Fatalf("after the sweep: %d keys in %d slots; want 1,000 in at most 1,536 (half again, whole chunks)", keys, n)
	}
	later := now.Add(2 * time.Minute)
	for i := range 1000 {
		d, err := s.Take(ctx, account(i), &hourDay, 1, later)
		if want := int64(100 - 2 - i%5); err != nil || d.Windows[0].Remaining != want {
			t.Fatalf("%s after the compaction: %d left, %v; want %d", account(i), d.Windows[0].Remaining, err, want)
		}
	}
	for i := range 5000 { // the arena grows again
		s.Take(ctx, fmt.Sprintf("{ip:%d}", i), &perIP, 1, later)
	}
	if n := s.Len(); n != 6000 {
		t.Fatalf("%d keys, want 6,000", n)
	}
}

func TestOpenCorruptState(t *testing.T) {
	// A row that cannot be decoded is skipped, not fatal.
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quota.db")
	s, err := inmem.Open(ctx, path, 0, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Take(ctx, "ok", &hourDay, 1, time.Now())
	s.Close()
	if err := inmem.CorruptForTest(path, "bad"); err != nil {
		t.Fatal(err)
	}
	s, err = inmem.Open(ctx, path, 0, inmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if d, _ := s.Peek(ctx, "ok", &hourDay, time.Now()); d.Windows[0].Remaining != 99 {
		t.Fatalf("remaining %d, want 99", d.Windows[0].Remaining)
	}
}

func TestSyncWriteFailureRefunds(t *testing.T) {
	// Flush interval 0: a charge whose write fails is answered with an
	// error and taken back, so that memory and disk agree and the client
	// is not charged for the error.
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "quota.db")
	now := time.Now()
	for _, alg := range []sluice.Algorithm{sluice.Sliding, sluice.Calendar, sluice.TokenBucket} {
		p := hourDay
		p.Algorithm = alg
		key := "acct-" + alg.String()
		s, err := inmem.Open(ctx, path, 0, inmem.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Take(ctx, key, &p, 3, now); err != nil {
			t.Fatal(err)
		}
		if err := inmem.FailWritesForTest(path, true); err != nil {
			t.Fatal(err)
		}
		if d, err := s.Take(ctx, key, &p, 2, now); err == nil {
			t.Fatalf("%v: take with failing writes: no error (%+v)", alg, d)
		}
		if d, _ := s.Peek(ctx, key, &p, now); d.Windows[0].Remaining != 97 || d.Windows[1].Remaining != 997 {
			t.Errorf("%v: after a failed write: remaining %d/%d in memory, want 97/997", alg, d.Windows[0].Remaining, d.Windows[1].Remaining)
		}
		if err := inmem.FailWritesForTest(path, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = inmem.Open(ctx, path, 0, inmem.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := s.Peek(ctx, key, &p, now); d.Windows[0].Remaining != 97 || d.Windows[1].Remaining != 997 {
			t.Errorf("%v: on disk: remaining %d/%d, want 97/997", alg, d.Windows[0].Remaining, d.Windows[1].Remaining)
		}
		s.Close()
	}
}

func TestBackgroundSweep(t *testing.T) {
	// The background sweep evicts from every shard by the latest time any
	// call decided at, ages that time by the wall clock while the store is
	// idle (callers on the real clock), and deletes expired rows on disk
	// in both modes.
	ctx := context.Background()
	minute := sluice.Policy{Windows: []sluice.Window{{Name: "minute", Length: time.Minute, Limit: 5}}}
	for _, every := range []time.Duration{0, time.Hour} {
		t.Run(every.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "quota.db")
			s, err := inmem.Open(ctx, path, every, inmem.Options{SweepInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			wall := time.Now().Truncate(time.Second)
			for i := range 100 {
				if _, err := s.Take(ctx, fmt.Sprint("idle", i), &minute, 1, wall); err != nil {
					t.Fatal(err)
				}
			}
			s.Flush()
			s.SweepTick(wall)
			if got := s.Len(); got != 100 {
				t.Fatalf("len = %d, want 100", got)
			}
			// Traffic on one key only, two minutes later: every shard
			// is swept by its time.
			s.Take(ctx, "busy", &minute, 1, wall.Add(2*time.Minute))
			s.Flush()
			s.SweepTick(wall.Add(2 * time.Minute))
			if got := s.Len(); got != 1 {
				t.Fatalf("after traffic on one key: len = %d, want 1", got)
			}
			// No traffic at all: the callers' time ages with the wall's.
			s.SweepTick(wall.Add(3 * time.Minute))
			s.SweepTick(wall.Add(4 * time.Minute))
			if got := s.Len(); got != 0 {
				t.Fatalf("idle: len = %d, want 0", got)
			}
			s.Flush()
			if rows, err := inmem.RowsForTest(path); err != nil || len(rows) != 0 {
				t.Fatalf("rows on disk: %v (%v), want none", rows, err)
			}
		})
	}
}

func TestBackgroundSweepFarClock(t *testing.T) {
	// Callers whose clock is far from the wall's (tests, replays) are
	// never aged: an idle store keeps what counts at their latest time.
	ctx := context.Background()
	s := inmem.New(inmem.Options{SweepInterval: time.Hour})
	defer s.Close()
	minute := sluice.Policy{Windows: []sluice.Window{{Name: "minute", Length: time.Minute, Limit: 5}}}
	t0 := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	s.Take(ctx, "k", &minute, 1, t0)
	wall := time.Now()
	s.SweepTick(wall)
	s.SweepTick(wall.Add(time.Hour))
	if got := s.Len(); got != 1 {
		t.Fatalf("len = %d, want 1", got)
	}
}
