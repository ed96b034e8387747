package telegram

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-telegram/bot/models"
)

// Election of the poller (CONTRACT.md §7 "Many instances").
//
// Telegram lets one getUpdates run at a time per bot (a second is answered
// 409), so with several instances on one token exactly one may poll. When
// Bot.Leases is set, the instances take a lease named LeaseName: its holder
// polls, the others try to take it every LeaseRetry. The holder renews it
// at every turn of its loop once LeaseTTL/4 has passed, and never has a
// getUpdates outstanding past its lease:
//
//   - it counts the lease from the instant before it sent the acquire or
//     renew call, so its view ends no later than the store's;
//   - it stops LeaseTTL/10 before that (1 s by default: for the drift of
//     the clocks and the time Telegram takes to notice a closed request);
//   - before every getUpdates it checks the lease on its monotonic clock,
//     asks Telegram to hold the call at most until LeaseTTL/10 before that
//     end, and cancels the call at the end whatever Telegram does.
//
// So a holder paused past its lease (SIGSTOP, a frozen VM) finds the lease
// gone when it wakes, on its own clock, before it polls again: it goes back
// to trying to acquire. A holder that dies is replaced once its lease
// expires: within LeaseTTL + LeaseRetry (11 s by default). One that stops
// (Close) releases the lease, and another takes it within LeaseRetry.
const (
	LeaseName         = "telegram-poller"
	DefaultLeaseTTL   = 10 * time.Second
	DefaultLeaseRetry = time.Second
	leaseCallTimeout  = 2 * time.Second
	pollErrorPause    = time.Second
	maxPollErrorPause = 5 * time.Second
)

// updateTypes are the updates the bot asks for.
var updateTypes = []string{"message", "callback_query"}

// poll long-polls until ctx ends: alone without Leases, or while holding
// the lease.
func (b *Bot) poll(ctx context.Context) {
	if b.Leases == nil {
		b.pollWhile(ctx, 0, func() (time.Time, bool) { return time.Time{}, true })
		return
	}
	ttl := b.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	retry := b.LeaseRetry
	if retry <= 0 {
		retry = DefaultLeaseRetry
	}
	for ctx.Err() == nil {
		t0 := time.Now()
		actx, cancel := context.WithTimeout(ctx, leaseCallTimeout)
		fence, err := b.Leases.AcquireLease(actx, LeaseName, ttl)
		cancel()
		if err != nil {
			b.logger().Warn("telegram: acquire the poller lease", slog.String("error", err.Error()))
		}
		if fence > 0 {
			b.lead(ctx, fence, t0, ttl)
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
	}
}

// lead polls while the lease under fence, acquired at t0, holds, renewing
// it, and releases it when ctx ends.
func (b *Bot) lead(ctx context.Context, fence int64, t0 time.Time, ttl time.Duration) {
	b.logger().Info("telegram: this instance polls", slog.Int64("fence", fence))
	b.leading.Store(true)
	defer b.leading.Store(false)
	safety := ttl / 10
	end := t0.Add(ttl - safety) // of the lease, on this clock
	renewed := t0
	lease := func() (time.Time, bool) {
		if time.Since(renewed) >= ttl/4 {
			t1 := time.Now()
			rctx, cancel := context.WithTimeout(ctx, min(leaseCallTimeout, time.Until(end)))
			ok, err := b.Leases.RenewLease(rctx, LeaseName, fence, ttl)
			cancel()
			switch {
			case ctx.Err() != nil:
				return time.Time{}, false // closing
			case err == nil && !ok:
				return time.Time{}, false
			case err == nil:
				renewed, end = t1, t1.Add(ttl-safety)
			default:
				// Try again next turn; the lease holds until end.
				b.logger().Warn("telegram: renew the poller lease", slog.String("error", err.Error()))
			}
		}
		return end, time.Now().Before(end)
	}
	b.pollWhile(ctx, safety, lease)
	if ctx.Err() != nil {
		rctx, cancel := context.WithTimeout(context.Background(), leaseCallTimeout)
		if err := b.Leases.ReleaseLease(rctx, LeaseName, fence); err != nil {
			b.logger().Warn("telegram: release the poller lease", slog.String("error", err.Error()))
		}
		cancel()
		return
	}
	b.logger().Warn("telegram: lost the poller lease; another instance polls", slog.Int64("fence", fence))
}

// pollWhile calls getUpdates while lease reports true, each call held by
// Telegram until at most margin before the end it reports (a zero end: no
// end) and canceled at the end.
func (b *Bot) pollWhile(ctx context.Context, margin time.Duration, lease func() (time.Time, bool)) {
	pause := time.Duration(0)
	for ctx.Err() == nil {
		if pause > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
		}
		end, ok := lease()
		if !ok {
			return
		}
		timeout := b.pollTimeout()
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if !end.IsZero() {
			timeout = min(timeout, time.Until(end)-margin)
			cctx, cancel = context.WithDeadline(ctx, end)
		}
		updates, raws, err := b.getUpdates(cctx, b.offset, max(timeout, 0)/time.Second)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if cctx.Err() == nil || end.IsZero() {
				b.logger().Warn("telegram: getUpdates", slog.String("error", err.Error()))
				pause = min(max(2*pause, pollErrorPause), maxPollErrorPause)
			}
			continue
		}
		pause = 0
		if !end.IsZero() && timeout < time.Second {
			// A short poll, the lease near its end while renewing fails:
			// do not spin.
			pause = time.Second / 5
		}
		for i, u := range updates {
			if u.ID >= b.offset {
				b.offset = u.ID + 1
			}
			b.dispatch(u, raws[i])
		}
	}
}

func (b *Bot) pollTimeout() time.Duration {
	if b.PollTimeout > 0 {
		return b.PollTimeout
	}
	return DefaultPollTimeout
}

// getUpdates makes one getUpdates call asking Telegram to hold it up to
// timeout seconds, and returns the updates with the JSON of each. An update
// that does not decode is left out (and confirmed by the next call).
func (b *Bot) getUpdates(ctx context.Context, offset int64, timeout time.Duration) ([]*models.Update, [][]byte, error) {
	allowed, _ := json.Marshal(updateTypes)
	form := url.Values{
		"offset":          {strconv.FormatInt(offset, 10)},
		"timeout":         {strconv.FormatInt(int64(timeout), 10)},
		"allowed_updates": {string(allowed)},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.apiBase()+"/getUpdates", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, nil, errors.New("telegram: getUpdates: bad API URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := b.client.Do(req)
	if err != nil {
		// The error holds the URL, and so the token: say less.
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, errors.New("telegram: getUpdates: the Bot API did not answer")
	}
	defer resp.Body.Close()
	var ans struct {
		OK          bool              `json:"ok"`
		Result      []json.RawMessage `json:"result"`
		ErrorCode   int               `json:"error_code"`
		Description string            `json:"description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&ans); err != nil {
		return nil, nil, fmt.Errorf("telegram: getUpdates: bad answer (HTTP %d)", resp.StatusCode)
	}
	if !ans.OK {
		return nil, nil, fmt.Errorf("telegram: getUpdates: %d %s", ans.ErrorCode, shorten(ans.Description, 200))
	}
	updates := make([]*models.Update, 0, len(ans.Result))
	raws := make([][]byte, 0, len(ans.Result))
	for _, raw := range ans.Result {
		u := new(models.Update)
		if err := json.Unmarshal(raw, u); err != nil {
			// Its ID, at least, so that it is confirmed and not polled
			// again and again.
			var id struct {
				ID int64 `json:"update_id"`
			}
			json.Unmarshal(raw, &id)
			b.logger().Warn("telegram: an update that does not decode; skipped", slog.Int64("update_id", id.ID), slog.String("error", err.Error()))
			if id.ID >= b.offset {
				b.offset = id.ID + 1
			}
			continue
		}
		updates = append(updates, u)
		raws = append(raws, raw)
	}
	return updates, raws, nil
}

func (b *Bot) apiBase() string {
	u := b.APIURL
	if u == "" {
		u = DefaultAPIURL
	}
	return strings.TrimRight(u, "/") + "/bot" + b.Token
}

// Leading reports whether this instance holds the poller lease now (always
// false without Leases).
func (b *Bot) Leading() bool { return b.leading.Load() }
