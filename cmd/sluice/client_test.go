package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/client"
)

// The client SDK against the real gateway, on the real clock: the quota
// limiter's clock must be the one the client waits by.

// realClock puts the gateway's quota limiter on the real clock.
func (g *gateway) realClock() *gateway {
	g.m.Quota.Now = time.Now
	g.m.AuthQuota.Now = time.Now
	return g
}

// rejected is the number of image requests the gateway has refused with a
// 429, from its own metrics: the client's count is not taken on trust.
func (g *gateway) rejected() int {
	g.t.Helper()
	r := g.do("GET", "/metrics", "", "")
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(r.body)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "sluice_quota_decisions_total{") && strings.Contains(line, `outcome="rejected"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += int(v)
		}
	}
	if r.status != 200 {
		g.t.Fatalf("metrics: %d", r.status)
	}
	return n
}

// limits sets the account's hour and day limits.
func (g *gateway) limits(id int64, hour, day int) {
	g.t.Helper()
	if r := g.do("PUT", fmt.Sprintf("/admin/accounts/%d/limits", id), g.admin, fmt.Sprintf(`{"hour":%d,"day":%d}`, hour, day)); r.status != 200 {
		g.t.Fatalf("limits: %d %s", r.status, r.body)
	}
}

func (g *gateway) client(key string, opts ...client.Option) *client.Client {
	return client.New(g.url, key, append([]client.Option{client.WithBackoff(10*time.Millisecond, 100*time.Millisecond)}, opts...)...)
}

var small = client.ImageRequest{Model: "sluice-sketch", Prompt: "a lighthouse", Size: "64x64"}

// generateAll makes n calls of one image from `workers` goroutines and
// fails the test on any error.
func generateAll(t *testing.T, c *client.Client, n, workers int) {
	t.Helper()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				r := small
				r.Prompt = fmt.Sprint("prompt ", i)
				if _, err := c.GenerateImages(context.Background(), &r); err != nil {
					t.Errorf("image %d: %v", i, err)
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}

// TestClientHourExhaustion: 3 images an hour of 2 seconds, 10 images from
// four goroutines: the client waits out each hour instead of sending into a
// 429, and finishes at the bound the window allows, floor((10-1)/3)*2s.
func TestClientHourExhaustion(t *testing.T) {
	g := startMain(t, "", map[string]string{"SLUICE_LIMITS_WINDOWS_HOUR": "2s", "SLUICE_LIMITS_WINDOWS_DAY": "60s"}).realClock()
	id, key := g.account("hour@example.com", "vip")
	g.limits(id, 3, 100)
	c := g.client(key)
	start := time.Now()
	generateAll(t, c, 10, 4)
	elapsed := time.Since(start)
	if s := c.Stats(); s.RateLimited != 0 || g.rejected() != 0 || s.Requests != 10 {
		t.Fatalf("stats %+v; the gateway rejected %d", s, g.rejected())
	}
	// Zero rejections already prove the client never went early; the
	// upper bound shows it did not dawdle either: one second of slack
	// for the gateway's one-second resolution (units charged late in a
	// second free a second later).
	if bound := 6 * time.Second; elapsed < bound-time.Second || elapsed > bound+time.Second {
		t.Fatalf("10 images in %v; the windows allow %v", elapsed, bound)
	}
}

// TestClientDayExhaustion: when the day is spent, a client that may not
// wait is told at once which window and for how long, without a request;
// one that may wait sends when the day window resets, not before.
func TestClientDayExhaustion(t *testing.T) {
	g := startMain(t, "", map[string]string{"SLUICE_LIMITS_WINDOWS_HOUR": "2s", "SLUICE_LIMITS_WINDOWS_DAY": "5s"}).realClock()
	id, key := g.account("day@example.com", "vip")
	g.limits(id, 5, 6)
	c := g.client(key)
	start := time.Now()
	generateAll(t, c, 6, 3) // 5 now, 1 after the hour window
	nowait := g.client(key, client.WithMaxWait(0))
	if _, err := nowait.Usage(context.Background()); err != nil {
		t.Fatal(err)
	}
	requests := nowait.Stats().Requests
	_, err := nowait.GenerateImages(context.Background(), &small)
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 0 || e.Code != sluice.ERATELIMIT || e.Window != "day" || e.RetryAfter <= 0 || e.RetryAfter > 5*time.Second {
		t.Fatalf("not waiting: %#v", err)
	}
	if nowait.Stats().Requests != requests {
		t.Fatal("a request known to fail was sent")
	}
	// A deadline before the day's reset: told at once, too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.GenerateImages(ctx, &small); !client.IsRateLimited(err) {
		t.Fatalf("with a short deadline: %v", err)
	}
	// Waiting: the 7th image goes when the first ones leave the day.
	if _, err := c.GenerateImages(context.Background(), &small); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 4*time.Second {
		t.Fatalf("the 7th image came %v after the first; the day window is 5s", elapsed)
	}
	if s := c.Stats(); s.RateLimited != 0 || g.rejected() != 0 {
		t.Fatalf("stats %+v; the gateway rejected %d", s, g.rejected())
	}
	// The day now counts the image of the second hour and the 7th, and
	// those of the first five that were charged in a later second than the
	// first (a slow machine spreads them): never more than its limit.
	r := g.do("GET", "/v1/usage", key, "")
	day := r.json(t)["day"].(map[string]any)
	if used := day["used"].(float64); used < 2 || used > 6 || used+day["remaining"].(float64) != 6 {
		t.Fatalf("usage %s", r.body)
	}
}

// TestClientElite: no limit headers, no throttling: after the first answer
// the client never waits, whatever the load.
func TestClientElite(t *testing.T) {
	g := startMain(t, "", map[string]string{"SLUICE_LIMITS_WINDOWS_HOUR": "2s"}).realClock()
	_, key := g.account("elite@example.com", "elite")
	c := g.client(key)
	if _, err := c.GenerateImages(context.Background(), &small); err != nil {
		t.Fatal(err)
	}
	generateAll(t, c, 300, 8) // more than any plan's hour
	if q := c.Quota(); !q.Known || !q.Unlimited || len(q.Windows) != 0 {
		t.Fatalf("view %+v", q)
	}
	if s := c.Stats(); s.Waits != 0 || s.RateLimited != 0 || s.Requests != 301 {
		t.Fatalf("stats %+v", s)
	}
}

// TestClientConcurrentOneLeft: ten goroutines and one unit left: one
// request goes out, not ten, whether or not the client has seen the
// account's figures before.
func TestClientConcurrentOneLeft(t *testing.T) {
	g := startMain(t, "", map[string]string{}).realClock()
	for _, known := range []bool{false, true} {
		t.Run(fmt.Sprint("known=", known), func(t *testing.T) {
			id, key := g.account(fmt.Sprintf("one-%v@example.com", known), "vip")
			g.limits(id, 3, 100)
			g.generate(key, 2)
			c := g.client(key, client.WithMaxWait(0))
			if known {
				if _, err := c.Usage(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			before := c.Stats().Requests
			var mu sync.Mutex
			var ok, refused int
			var wg sync.WaitGroup
			for range 10 {
				wg.Go(func() {
					_, err := c.GenerateImages(context.Background(), &small)
					var e *client.Error
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						ok++
					case errors.As(err, &e) && e.Status == 0 && e.Window == "hour":
						refused++
					default:
						t.Errorf("unexpected: %v", err)
					}
				})
			}
			wg.Wait()
			if sent := c.Stats().Requests - before; ok != 1 || refused != 9 || sent != 1 {
				t.Fatalf("%d ok, %d refused, %d requests sent", ok, refused, sent)
			}
			if g.rejected() != 0 {
				t.Fatalf("the gateway rejected %d", g.rejected())
			}
		})
	}
}
