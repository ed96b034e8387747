package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	sluice "github.com/sluicehq/sluice"
)

// Bus is a sluice.InvalidationBus over PostgreSQL's LISTEN/NOTIFY, for
// gateways that share only the account database (embedded counters): a
// plan change or a revoked key made through one reaches the others' account
// caches at once. (Gateways on one Redis use the redis package's bus, which
// also carries the resets and refunds their rejection caches must hear of.)
//
// The channel is named after the schema of the connection
// ("sluice_invalidate_" and 16 hex digits of the md5 of current_schema()),
// so that deployments in different schemas of one database do not hear
// each other. PUBLISH is a pg_notify over the DB's pool; LISTEN holds a
// connection of its own, which reconnects by itself with a backoff of up to
// a second until Close. Each successful LISTEN (the first included)
// delivers sluice.InvalidateAll to the subscribers, since what was notified
// while it was away is lost; each message names the instance that sent it,
// so that an instance does not receive its own.
type Bus struct {
	db     *DB
	origin string
	log    *slog.Logger

	subs sluice.InvalidationSubscribers

	cancel context.CancelFunc
	done   chan struct{}
}

var _ sluice.InvalidationBus = (*Bus)(nil)

// channelSQL names the schema's channel, server-side.
const channelSQL = `'sluice_invalidate_' || left(md5(current_schema()), 16)`

// NewBus starts a bus on db's database; Close stops it (before db is
// closed). logger reports lost subscriptions; nil means slog.Default().
func NewBus(db *DB, logger *slog.Logger) *Bus {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{db: db, origin: sluice.RandomString(16), log: logger, cancel: cancel, done: make(chan struct{})}
	go b.run(ctx)
	return b
}

// Close stops the listener and closes its connection.
func (b *Bus) Close() error {
	b.cancel()
	<-b.done
	return nil
}

// Publish implements sluice.InvalidationBus. A context without a deadline
// gets a second.
func (b *Bus) Publish(ctx context.Context, inv sluice.Invalidation) error {
	if inv.Kind == sluice.InvalidateAll {
		return errors.New("postgres: InvalidateAll is not published")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Second)
		defer cancel()
	}
	if _, err := b.db.pool.Exec(ctx, `SELECT pg_notify(`+channelSQL+`, $1)`, sluice.EncodeInvalidation(b.origin, inv)); err != nil {
		return fmt.Errorf("postgres: notify: %w", err)
	}
	return nil
}

// Subscribe implements sluice.InvalidationBus.
func (b *Bus) Subscribe(fn func(sluice.Invalidation)) (cancel func()) {
	return b.subs.Subscribe(fn)
}

func (b *Bus) deliver(inv sluice.Invalidation) { b.subs.Deliver(inv) }

// run listens, and listens again whenever the connection is lost, until
// ctx ends.
func (b *Bus) run(ctx context.Context) {
	defer close(b.done)
	const minWait, maxWait = 50 * time.Millisecond, time.Second
	wait := minWait
	for {
		listened, err := b.listen(ctx)
		if ctx.Err() != nil {
			return
		}
		if listened {
			wait = minWait
		}
		b.log.Warn("invalidation bus: LISTEN lost; caches fall back on their TTL until it is back",
			"error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxWait)
	}
}

// listen connects, LISTENs and delivers notifications until the connection
// fails or ctx ends.
func (b *Bus) listen(ctx context.Context) (listened bool, err error) {
	cfg := b.db.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var channel string
	if err := conn.QueryRow(ctx, `SELECT `+channelSQL).Scan(&channel); err != nil {
		return false, err
	}
	// Named for tests and operators: pg_stat_activity shows the listener.
	if _, err := conn.Exec(ctx, `SELECT set_config('application_name', $1, false)`, "sluice bus "+channel); err != nil {
		return false, err
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
		return false, err
	}
	b.deliver(sluice.Invalidation{Kind: sluice.InvalidateAll}) // what was notified before now may be lost
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		if origin, inv, ok := sluice.DecodeInvalidation(n.Payload); ok && origin != b.origin {
			b.deliver(inv)
		}
	}
}
