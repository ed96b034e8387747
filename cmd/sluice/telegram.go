package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/postgres"
	"github.com/sluicehq/sluice/redis"
	"github.com/sluicehq/sluice/telegram"
)

// botDrainTimeout bounds how long Close waits for the bot's queued replies.
const botDrainTimeout = 5 * time.Second

// newBot creates the Telegram bot on the gateway's accounts, quota,
// generator, plans and windows, so that both channels draw from the same
// counters. In webhook mode it mounts the bot's handler on the gateway at
// the path of telegram.webhook_url; Run starts the bot once the gateway
// listens. It must be called before the gateway opens.
func (m *Main) newBot(images sluice.ImageGenerator, log *slog.Logger) error {
	cfg := &m.Config
	t := cfg.Telegram
	m.Bot = &telegram.Bot{
		Accounts: m.Accounts,
		Quota:    m.Quota,
		Images:   images,
		Plans:    cfg.Plans,
		Models:   cfg.Models,
		Windows: sluice.WindowConfig{
			Algorithm: cfg.Limits.Algorithm,
			Hour:      cfg.Limits.Windows.Hour,
			Day:       cfg.Limits.Windows.Day,
			Location:  cfg.Limits.Timezone,
		},
		Token:         t.Token,
		APIURL:        t.APIURL,
		WebhookURL:    t.WebhookURL,
		WebhookSecret: t.WebhookSecret,
		UpgradeURL:    t.UpgradeURL,
		Outbox: telegram.OutboxLimits{
			ChatMessages: t.Outbox.ChatMessages, ChatBytes: int(t.Outbox.ChatBytes),
			Messages: t.Outbox.Messages, Bytes: int(t.Outbox.Bytes),
		},
		Registry: m.Server.Registry,
		Logger:   log.With("channel", "telegram"),
		Usage:    m.Server.Usage,
	}
	// The journal of updates is in the account database, shared by the
	// instances that share it. With a shared store they elect one poller
	// (CONTRACT.md §7): on Redis if the counters are there (its lease
	// expires on its own, even for a paused holder), else on the shared
	// PostgreSQL. Embedded storage is one instance: no election.
	m.Bot.Journal = m.BotUpdates
	switch {
	case cfg.Quota.Store == config.StoreRedis:
		if s, ok := m.Quota.Store.(*redis.Store); ok {
			m.Bot.Leases = s
		}
	case cfg.Database.URL != "":
		if db, ok := m.Audit.(*postgres.DB); ok {
			m.Bot.Leases = db
		}
	}
	if t.WebhookURL != "" {
		u, err := url.Parse(t.WebhookURL)
		if err != nil || u.Path == "" || u.Path == "/" {
			return fmt.Errorf("telegram.webhook_url: must have a path, like https://bot.example.com/telegram; the gateway serves the webhook there")
		}
		if m.Server.Handlers == nil {
			m.Server.Handlers = map[string]http.Handler{}
		}
		m.Server.Handlers["POST "+u.Path] = m.Bot.WebhookHandler()
	}
	m.Server.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_telegram_outbox_pending",
		Help: "Messages the Telegram bot has queued and not yet sent (or failed for good).",
	}, func() float64 { return float64(m.Bot.Pending()) }))
	m.closers = append(m.closers, m.closeBot)
	return nil
}

// startBot starts the bot: it registers the webhook, or starts long
// polling.
func (m *Main) startBot(ctx context.Context) error {
	if err := m.Bot.Start(ctx); err != nil {
		return err
	}
	if name := m.Bot.Username(); name != "" && m.Console != nil {
		m.Console.SetTelegramBot(name)
	}
	mode := "long polling"
	if m.Bot.Leases != nil {
		mode = "long polling by the elected instance"
	}
	if m.Config.Telegram.WebhookURL != "" {
		mode = "webhook"
	}
	m.Logger.Info("telegram bot started", "mode", mode)
	return nil
}

// closeBot stops the bot, sending its queued replies for a few seconds.
func (m *Main) closeBot() error {
	ctx, cancel := context.WithTimeout(context.Background(), botDrainTimeout)
	defer cancel()
	return m.Bot.Close(ctx)
}
