package sluice

import (
	"context"
	"time"
)

// AlertMark says that the alert of one threshold of one window of an
// account has been sent, and that it must not be sent again before Until.
//
// The period of a mark (how long it holds) is the alerts package's rule:
// for a calendar window, until the window's end; for a sliding window or a
// token bucket, one window length from the crossing.
type AlertMark struct {
	AccountID int64
	Window    string // the window's name: "hour", "day"
	Threshold int    // percent, 1 to 100
	Until     time.Time
}

// AlertMarks keeps the marks of sent alerts in a store that every instance
// of a deployment shares, so that an alert goes out once per threshold per
// window period across instances and restarts. Implementations are safe for
// concurrent use.
type AlertMarks interface {
	// MarkAlert stores m unless a mark for the same account, window and
	// threshold holds at now (its Until is after now), atomically: of
	// several callers racing for one mark, exactly one gets true. true
	// means the caller is the one to send the alert.
	MarkAlert(ctx context.Context, m AlertMark, now time.Time) (bool, error)
	// DeleteExpiredAlerts deletes the marks that no longer hold at now and
	// returns how many it deleted. MarkAlert already ignores them; this
	// bounds the store's size.
	DeleteExpiredAlerts(ctx context.Context, now time.Time) (int64, error)
}

// TelegramSender sends a text message to a Telegram user (a private chat
// with the bot) without making its caller wait: SendText queues the message
// and returns; delivery, with its retries under Telegram's flood limits,
// happens in the background. An error means the message was not queued
// (the bot is closed). Implementations are safe for concurrent use.
type TelegramSender interface {
	SendText(telegramID int64, text string) error
}
