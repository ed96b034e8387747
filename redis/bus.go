package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice"
)

// Bus is a sluice.InvalidationBus over Redis pub/sub: one channel,
// Prefix+"invalidate", on the Redis that holds the counters.
//
// Why Redis rather than PostgreSQL's LISTEN/NOTIFY: the rejection cache
// that a reset or refund must clear caches what Redis decided, so with
// quota.store: redis every instance already depends on that Redis for every
// decision; a bus on it adds no dependency and no failure mode the gateway
// does not already have, and a PUBLISH costs about what a decision does.
// (Gateways that share only a database, with embedded counters, share no
// rejections to clear: the postgres package's bus, LISTEN/NOTIFY, serves
// their accounts caches.)
//
// It keeps one client of its own: PUBLISH goes over its pipelined
// connection, SUBSCRIBE over a dedicated one. The subscriber reconnects by
// itself, with a backoff of up to a second, for as long as the bus is open;
// each successful SUBSCRIBE (the first included) delivers
// sluice.InvalidateAll to the subscribers, since messages published while
// it was away are lost. Each message names the instance that sent it, so
// that an instance does not receive its own.
//
// Messages are sluice.EncodeInvalidation's: ids only, never a secret.
type Bus struct {
	channel string
	origin  string // this bus's random name
	timeout time.Duration
	log     *slog.Logger

	client atomic.Pointer[rueidis.Client] // nil until the first dial succeeds

	subs sluice.InvalidationSubscribers

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

var _ sluice.InvalidationBus = (*Bus)(nil)

// BusOptions configure a Bus.
type BusOptions struct {
	// Prefix is put in front of the channel's name, as the store puts it
	// in front of keys.
	Prefix string
	// Timeout bounds a Publish whose context has no deadline; 0 means a
	// second.
	Timeout time.Duration
	// Logger reports lost subscriptions; nil means slog.Default().
	Logger *slog.Logger
}

// busBackoff bounds the wait between two attempts to subscribe.
const (
	busMinBackoff = 50 * time.Millisecond
	busMaxBackoff = time.Second
)

// OpenBus starts a bus on the Redis at url (see ParseURL). Redis need not
// be up: the bus connects in the background, and Publish fails meanwhile.
// Close stops it.
func OpenBus(url string, opts BusOptions) (*Bus, error) {
	o, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	b := &Bus{
		channel: opts.Prefix + "invalidate",
		origin:  sluice.RandomString(16),
		timeout: opts.Timeout,
		log:     opts.Logger,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if b.timeout <= 0 {
		b.timeout = time.Second
	}
	if b.log == nil {
		b.log = slog.Default()
	}
	go b.run(o)
	return b, nil
}

// Close stops the subscriber and closes the connections.
func (b *Bus) Close() error {
	b.once.Do(func() { close(b.stop) })
	<-b.done
	if c := b.client.Load(); c != nil {
		(*c).Close()
	}
	return nil
}

// Publish implements sluice.InvalidationBus.
func (b *Bus) Publish(ctx context.Context, inv sluice.Invalidation) error {
	if inv.Kind == sluice.InvalidateAll {
		return errors.New("redis: InvalidateAll is not published")
	}
	p := b.client.Load()
	if p == nil {
		return errors.New("redis: bus not connected")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.timeout)
		defer cancel()
	}
	c := *p
	if err := c.Do(ctx, c.B().Publish().Channel(b.channel).Message(sluice.EncodeInvalidation(b.origin, inv)).Build()).Error(); err != nil {
		return fmt.Errorf("redis: publish: %w", err)
	}
	return nil
}

// Subscribe implements sluice.InvalidationBus.
func (b *Bus) Subscribe(fn func(sluice.Invalidation)) (cancel func()) {
	return b.subs.Subscribe(fn)
}

// deliver calls every subscriber with inv. rueidis calls it from the one
// goroutine that reads the subscribed connection, so calls are in order.
func (b *Bus) deliver(inv sluice.Invalidation) { b.subs.Deliver(inv) }

// run subscribes, and subscribes again whenever the subscription is lost,
// until Close.
func (b *Bus) run(o rueidis.ClientOption) {
	defer close(b.done)
	wait := busMinBackoff
	for {
		subscribed, err := b.session(o)
		select {
		case <-b.stop:
			return
		default:
		}
		if subscribed {
			wait = busMinBackoff
		}
		b.log.Warn("invalidation bus: subscription lost; caches fall back on their TTL until it is back",
			"channel", b.channel, "error", err.Error(), "retry_in", wait.String())
		select {
		case <-b.stop:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, busMaxBackoff)
	}
}

// session subscribes on a dedicated connection and returns when the
// subscription ends: the connection broke, or Close.
func (b *Bus) session(o rueidis.ClientOption) (subscribed bool, err error) {
	p := b.client.Load()
	if p == nil {
		c, err := rueidis.NewClient(o)
		if err != nil {
			return false, err
		}
		p = &c
		b.client.Store(p)
	}
	dc, release := (*p).Dedicate()
	defer release()
	var ok atomic.Bool
	lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
		OnMessage: func(m rueidis.PubSubMessage) {
			origin, inv, valid := sluice.DecodeInvalidation(m.Message)
			if valid && origin != b.origin {
				b.deliver(inv)
			}
		},
		OnSubscription: func(s rueidis.PubSubSubscription) {
			if s.Kind == "subscribe" && s.Channel == b.channel {
				ok.Store(true)
				// Whatever was published before now may be lost.
				b.deliver(sluice.Invalidation{Kind: sluice.InvalidateAll})
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = dc.Do(ctx, dc.B().Subscribe().Channel(b.channel).Build()).Error()
	cancel()
	if err != nil {
		return false, err
	}
	select {
	case err := <-lost:
		if err == nil {
			err = errors.New("unsubscribed")
		}
		return ok.Load(), err
	case <-b.stop:
		return ok.Load(), nil
	}
}
