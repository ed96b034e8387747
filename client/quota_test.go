package client

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is a whole second of the server's (and, unless a step says otherwise,
// the local) clock.
var t0 = time.Unix(1_900_000_000, 0)

// gw returns the headers the gateway sends at server time now for windows
// given as name, limit, remaining, reset (seconds after now).
func gw(now time.Time, windows ...any) http.Header {
	h := http.Header{}
	var pol, rl string
	for i := 0; i < len(windows); i += 4 {
		name, lim, rem, reset := windows[i].(string), windows[i+1].(int), windows[i+2].(int), windows[i+3].(int)
		t := string(rune(name[0]-'a'+'A')) + name[1:]
		h.Set("X-RateLimit-Limit-"+t, fmt.Sprint(lim))
		h.Set("X-RateLimit-Remaining-"+t, fmt.Sprint(rem))
		h.Set("X-RateLimit-Reset-"+t, fmt.Sprint(now.Unix()+int64(reset)))
		if pol != "" {
			pol, rl = pol+", ", rl+", "
		}
		pol += fmt.Sprintf(`%q;q=%d;w=10`, name, lim)
		rl += fmt.Sprintf(`%q;r=%d;t=%d`, name, rem, reset)
	}
	if pol != "" {
		h.Set("RateLimit-Policy", pol)
		h.Set("RateLimit", rl)
	}
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	return h
}

// step is one event on a view: an answer arrives (h set; reserved n units
// are released), or a request for n units is decided (want set).
type step struct {
	at     time.Duration // local time after t0
	n      int64
	h      http.Header // an answer with these headers (status 200 unless status)
	status int
	want   *decision // the decision for n; send reserves n
}

func send() *decision { return &decision{send: true} }

func waitAnswer() *decision { return &decision{} }

func waitUntil(d time.Duration, window string, left int64) *decision {
	return &decision{until: t0.Add(d), exhausted: window, left: left, reset: t0.Add(d)}
}

// run applies the steps to a new view, failing with got/want on the first
// decision that differs.
func run(t *testing.T, steps []step) *view {
	t.Helper()
	v := newView()
	for i, s := range steps {
		now := t0.Add(s.at)
		v.mu.Lock()
		if s.h != nil {
			status := s.status
			if status == 0 {
				status = 200
			}
			if s.n > 0 {
				v.inflight -= s.n
				v.requests--
			}
			v.update(status, s.h, now.Add(-time.Millisecond), now)
		}
		if s.want != nil {
			got := v.decide(s.n, now)
			want := *s.want
			if !want.until.IsZero() && want.exhausted == "" {
				want.reset = time.Time{}
			}
			if got != want {
				v.mu.Unlock()
				t.Fatalf("step %d: decide(%d) at +%v = %+v, want %+v", i, s.n, s.at, got, want)
			}
			if got.send && s.n > 0 {
				v.inflight += s.n
				v.requests++
			}
		}
		v.mu.Unlock()
	}
	return v
}

func TestViewUnknownOneAtATime(t *testing.T) {
	run(t, []step{
		{n: 1, want: send()},
		{n: 1, want: waitAnswer()}, // the first answer will say
		{n: 0, want: send()},       // costs nothing: never waits
		{n: 1, h: gw(t0, "hour", 100, 99, 10, "day", 1000, 999, 60)},
		{n: 1, want: send()},
		{n: 1, want: send()},
	})
}

func TestViewUnlimited(t *testing.T) {
	v := run(t, []step{
		{n: 4, want: send()},
		{n: 4, h: http.Header{}}, // a 2xx without quota headers: Elite
		{n: 4, want: send()},
		{n: 4, want: send()},
		{n: 4, want: send()},
	})
	if q := v.snapshot(); !q.Known || !q.Unlimited || len(q.Windows) != 0 {
		t.Fatalf("snapshot %+v", q)
	}
	// An error without headers says nothing; a limited answer ends it.
	run(t, []step{
		{n: 1, want: send()},
		{n: 1, h: http.Header{}, status: 401},
		{n: 1, want: send()},
		{n: 1, want: waitAnswer()},
		{n: 1, h: http.Header{}},
		{h: gw(t0, "hour", 5, 0, 3)},
		{n: 1, want: waitUntil(3*time.Second, "hour", 0)},
	})
}

// TestViewHeaderlessAnswer: once the view holds the account's windows, a
// 2xx without quota headers (a proxy that strips them, a replay) leaves
// them alone; unlimitedAfter in a row mean the plan became unlimited.
func TestViewHeaderlessAnswer(t *testing.T) {
	v := run(t, []step{
		{n: 1, want: send()},
		{n: 1, h: gw(t0, "hour", 5, 2, 30)},
		{n: 1, want: send()},
		{n: 1, want: send()},
		{n: 1, h: gw(t0, "hour", 5, 1, 30)},
		{n: 1, h: http.Header{}}, // still limited: one left, not two
		{n: 2, want: waitUntil(30*time.Second, "hour", 1)},
		{n: 1, want: send()},
		{n: 1, h: http.Header{}},
		{n: 1, want: send()},
		{n: 1, h: gw(t0, "hour", 5, 1, 30)}, // headers again: the count restarts
		{n: 1, want: send()},
		{n: 1, h: http.Header{}},
		{n: 1, want: send()},
		{n: 1, h: http.Header{}},
		{n: 2, want: waitUntil(30*time.Second, "hour", 1)},
	})
	if q := v.snapshot(); q.Unlimited || len(q.Windows) != 1 || q.Windows[0].Remaining != 1 {
		t.Fatalf("after two header-less answers: %+v", q)
	}
	run(t, []step{
		{n: 1, want: send()},
		{n: 1, h: gw(t0, "hour", 5, 4, 30)},
		{n: 1, want: send()},
		{n: 1, h: http.Header{}},
		{n: 1, want: send()},
		{n: 1, h: http.Header{}},
		{n: 1, want: send()},
		{n: 1, h: http.Header{}}, // the third in a row: unlimited
		{n: 5, want: send()},
		{n: 5, want: send()},
	})
}

// TestViewInFlight: the units of requests in flight count against the
// server's Remaining; ten callers and one unit left send one request.
func TestViewInFlight(t *testing.T) {
	steps := []step{
		{n: 1, want: send()},
		{n: 1, h: gw(t0, "hour", 5, 1, 7, "day", 20, 16, 50)},
		{n: 1, want: send()},
	}
	for range 9 {
		steps = append(steps, step{n: 1, want: &decision{until: t0.Add(7 * time.Second)}})
	}
	steps = append(steps,
		step{at: time.Second, n: 1, h: gw(t0.Add(time.Second), "hour", 5, 0, 6, "day", 20, 15, 49)},
		step{at: time.Second, n: 1, want: waitUntil(7*time.Second, "hour", 0)},
		step{at: 7 * time.Second, n: 1, want: send()}, // the reset passed: one goes to see
		step{at: 7 * time.Second, n: 1, want: waitAnswer()},
		// A sliding window frees one unit, not five.
		step{at: 7 * time.Second, n: 1, h: gw(t0.Add(7*time.Second), "hour", 5, 0, 1, "day", 20, 14, 43)},
		step{at: 7 * time.Second, n: 1, want: waitUntil(8*time.Second, "hour", 0)},
	)
	run(t, steps)
}

// TestViewOutOfOrder: an answer decided before the one the view holds does
// not raise Remaining back.
func TestViewOutOfOrder(t *testing.T) {
	now := t0
	run(t, []step{
		{n: 3, want: send()},
		{n: 3, h: gw(now, "hour", 10, 7, 5)},
		{n: 3, want: send()},
		{n: 3, want: send()},
		{n: 3, h: gw(now, "hour", 10, 1, 5)}, // the later decision arrives first
		{n: 3, h: gw(now, "hour", 10, 4, 5)}, // the earlier one: ignored
		{n: 1, want: send()},
		{n: 1, want: waitUntil(5*time.Second, "", 0)}, // one unit left, in flight
		{n: 2, want: waitUntil(5*time.Second, "hour", 1)},
	})
}

// TestViewLatestReset: with two windows lacking room, the wait is until the
// later reset; a request no window can ever hold goes out (the server says
// why); a window the answer no longer names is dropped.
func TestViewLatestReset(t *testing.T) {
	run(t, []step{
		{n: 1, want: send()},
		{n: 1, h: gw(t0, "hour", 5, 0, 4, "day", 20, 0, 40)},
		{n: 1, want: waitUntil(40*time.Second, "day", 0)},
		{n: 6, want: send()},
		{n: 6, h: gw(t0, "hour", 5, 0, 4)}, // the day's limit was lifted
		{n: 1, want: waitUntil(4*time.Second, "hour", 0)},
	})
}

// TestViewSkew: resets are Unix seconds of the server's clock; a local clock
// that runs behind or ahead waits by its own clock for the same instant.
func TestViewSkew(t *testing.T) {
	for _, skew := range []time.Duration{0, 90 * time.Second, -3 * time.Hour, 2500 * time.Millisecond} {
		t.Run(skew.String(), func(t *testing.T) {
			v := newView()
			server := t0.Add(400 * time.Millisecond) // mid-second
			local := server.Add(-skew)
			v.mu.Lock()
			defer v.mu.Unlock()
			v.update(200, gw(server.Truncate(time.Second), "hour", 5, 0, 4), local.Add(-2*time.Millisecond), local)
			got := v.decide(1, local)
			// The server's reset is t0+4s; by the local clock that is
			// t0+4s-skew. One answer resolves the skew to a second; the
			// wait must not end before it, and ends at most the answer's
			// 0.4s past its second (plus its 2ms in flight) after it.
			want := t0.Add(4 * time.Second).Add(-skew)
			if diff := got.until.Sub(want); diff < 0 || diff > 402*time.Millisecond {
				t.Fatalf("until %v, want %v (+402ms at most)", got.until, want)
			}
		})
	}
}

// TestReserveConcurrent: ten goroutines and one unit left: one request goes
// out; the others wait for its answer and then for the reset, or, with no
// wait allowed, return a rate-limit error without sending.
func TestReserveConcurrent(t *testing.T) {
	for _, maxWait := range []time.Duration{0, -1} {
		t.Run(fmt.Sprint("maxWait=", maxWait), func(t *testing.T) {
			v := newView()
			now := time.Now()
			v.update(200, gw(now.Truncate(time.Second), "hour", 5, 1, 3600), now, now)
			var sent, refused atomic.Int64
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			var wg sync.WaitGroup
			for range 10 {
				wg.Go(func() {
					_, err := v.reserve(ctx, 1, maxWait, time.Now)
					switch {
					case err == nil:
						sent.Add(1)
						time.Sleep(20 * time.Millisecond)
						n := time.Now()
						resp := &http.Response{StatusCode: 200, Header: gw(n.Truncate(time.Second), "hour", 5, 0, 3600)}
						v.release(1, resp, n, n)
					case IsRateLimited(err):
						refused.Add(1)
					case ctx.Err() == nil:
						t.Errorf("reserve: %v", err)
					}
				})
			}
			wg.Wait()
			if sent.Load() != 1 {
				t.Fatalf("%d requests sent, want 1", sent.Load())
			}
			// With maxWait 0 the nine learn at once (after the one
			// answer) that the hour is spent; without a limit they wait
			// until the context's deadline, which is before the reset,
			// so they too give up at once.
			if refused.Load() != 9 {
				t.Fatalf("%d refused, want 9", refused.Load())
			}
		})
	}
}

// TestViewSkewConverges: the more answers, at more points of the second,
// the closer the wait comes to the server's reset, never before it, for a
// local clock ahead or behind.
func TestViewSkewConverges(t *testing.T) {
	for _, skew := range []time.Duration{0, 300 * time.Millisecond, -300 * time.Millisecond} {
		t.Run(skew.String(), func(t *testing.T) {
			v := newView()
			v.mu.Lock()
			defer v.mu.Unlock()
			want := t0.Add(10 * time.Second).Add(-skew) // the reset, locally
			var local time.Time
			for i := range 20 {
				server := t0.Add(time.Duration(i) * 50 * time.Millisecond)
				local = server.Add(-skew)
				h := gw(server.Truncate(time.Second), "hour", 100, 0, int(t0.Add(10*time.Second).Sub(server.Truncate(time.Second))/time.Second))
				v.update(200, h, local.Add(-time.Millisecond), local.Add(time.Millisecond))
				got := v.decide(1, local).until
				if got.Before(want) {
					t.Fatalf("answer %d: wait until %v, before the reset %v", i, got.Sub(t0), want.Sub(t0))
				}
			}
			if got := v.decide(1, local).until; got.Sub(want) > 10*time.Millisecond {
				t.Fatalf("after 20 answers: wait until %v, the reset is %v", got.Sub(t0), want.Sub(t0))
			}
		})
	}
}
