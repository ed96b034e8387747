package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/history"
)

// startHistory records every quota decision of the gateway and the bot into
// store, flushed every usage.flush_interval and purged by
// usage.retention; Close flushes what is left.
func (m *Main) startHistory(store sluice.UsageStore, reg prometheus.Registerer, log *slog.Logger) {
	cfg := &m.Config
	m.History = history.New(store, history.Options{
		FlushInterval: cfg.Usage.FlushInterval,
		Retention:     history.Retention(cfg.Usage.Retention),
		Logger:        log,
		Registerer:    reg,
	})
	m.closers = append(m.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), m.Config.Server.ShutdownTimeout)
		defer cancel()
		return m.History.Close(ctx)
	})
	m.usage = append(m.usage, m.History)
}
