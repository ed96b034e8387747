package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/alert"
)

// alertsDrainTimeout bounds how long Close waits for the webhooks being
// delivered or waiting for a retry; those still pending are dropped.
const alertsDrainTimeout = 5 * time.Second

// newAlerts starts the quota alerts on every decision of the gateway and
// the bot, with their marks in the account database, unless
// alerts.thresholds is empty. It must be called after newBot and before the
// gateway opens, so that it stops after the gateway and before the bot and
// the mailer it hands its messages to (closers run in reverse).
func (m *Main) newAlerts(marks sluice.AlertMarks, reg prometheus.Registerer, log *slog.Logger) error {
	cfg := &m.Config
	if len(cfg.Alerts.Thresholds) == 0 {
		return nil
	}
	m.Alerts = &alert.Notifier{
		Accounts:      m.Accounts,
		Marks:         marks,
		Plans:         cfg.Plans,
		Algorithm:     cfg.Limits.Algorithm,
		Thresholds:    cfg.Alerts.Thresholds,
		Mailer:        m.Mailer,
		WebhookURL:    cfg.Alerts.WebhookURL,
		WebhookSecret: cfg.Alerts.WebhookSecret,
		Registry:      reg,
		Logger:        log.With("component", "alerts"),
	}
	// Beside the usage history, on the same decisions.
	m.usage = append(m.usage, m.Alerts)
	m.Server.Usage = m.usage
	if m.Bot != nil {
		m.Alerts.Telegram = m.Bot
		m.Bot.Usage = m.usage
	}
	if err := m.Alerts.Start(); err != nil {
		return err
	}
	m.closers = append(m.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), alertsDrainTimeout)
		defer cancel()
		return m.Alerts.Close(ctx)
	})
	return nil
}
