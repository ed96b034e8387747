// Package alert tells accounts when their use of a quota window crosses a
// threshold (CONTRACT.md §10): by mail, by Telegram and by a signed webhook
// to the operator. A Notifier is a sluice.UsageRecorder: the gateway and
// the bot hand it every quota decision.
//
// Crossing: for each window with a limit L, a decision that charged u units
// leaves used units counted (WindowStatus.Used); before it, used − u were. Threshold T
// (percent) is crossed when used−u < ⌈T·L/100⌉ ≤ used. A shadow decision
// charges nothing, so its would-be use is counted instead: before = used,
// after = used + u. A decision that crosses several thresholds at once
// raises each of them, except that thresholds that come to the same use (80
// and 100 % of a limit of 1) raise only the highest.
//
// Once per period: before anything is sent, the alert's mark
// (account, window, threshold) is stored in a sluice.AlertMarks shared by
// every instance (the account database), with an upsert that succeeds only
// when no mark holds; the instance that stores it sends, any other stays
// silent. A mark holds until:
//
//   - calendar windows: the end of the window it was crossed in (the
//     window's Reset), so each threshold fires at most once per calendar
//     hour or day;
//   - sliding windows and token buckets: one window length after the
//     crossing, so a threshold fires again only after a whole window has
//     passed since it last fired, however the use rises and falls within
//     it.
//
// Times are the decisions' own (the quota store's clock). A reset of the
// account's usage does not clear the marks.
//
// Never in the way: Record only does arithmetic and, on a crossing, a
// non-blocking send to a bounded queue; a full queue drops the alert and
// counts it (sluice_alerts_dropped_total{queue="alerts"}). One worker
// goroutine marks, looks the account up and hands the messages on: to the
// Mailer's queue, the bot's outbox, and the webhook's retry queue, none of
// which blocks it. A mark is stored before sending, so an alert whose
// delivery fails is not sent again by another instance: at most once.
package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice"
)

// Defaults of the Notifier's fields.
const (
	DefaultQueueSize      = 1024
	DefaultWebhookPending = 1024
	DefaultWebhookTimeout = 10 * time.Second
	DefaultBackoff        = 5 * time.Second
	DefaultMaxBackoff     = 5 * time.Minute
	DefaultAttempts       = 8
	// PurgeInterval is how often expired marks are deleted.
	PurgeInterval = time.Hour
	// storeTimeout bounds one call of the worker to a store.
	storeTimeout = 10 * time.Second
)

// DefaultThresholds are the thresholds of alerts.thresholds by default.
func DefaultThresholds() []int { return []int{80, 100} }

// Notifier watches quota decisions and sends the alerts. Set its fields,
// then call Start; they must not change after that. Close stops it. Record
// is safe for concurrent use, before Start (alerts wait in the queue) and
// after Close (they are dropped).
type Notifier struct {
	// Accounts finds the account of an alert: its email, Telegram user
	// and mail preference.
	Accounts sluice.AccountService
	// Marks keeps the marks of sent alerts, shared by every instance.
	Marks sluice.AlertMarks
	// Plans name the plans in the texts.
	Plans []sluice.Plan
	// Algorithm is the deployment's (limits.algorithm): it decides how
	// long a mark holds.
	Algorithm sluice.Algorithm
	// Thresholds are percents of a window's limit, each in 1..100; nil
	// means DefaultThresholds.
	Thresholds []int

	// Mailer sends the alerts by mail; nil: none.
	Mailer sluice.Mailer
	// Telegram sends the alerts to linked Telegram users; nil: none.
	Telegram sluice.TelegramSender
	// WebhookURL receives every alert as a signed POST; empty: none.
	WebhookURL string
	// WebhookSecret signs the webhooks (see Sign).
	WebhookSecret string
	// HTTPClient posts the webhooks; nil means a client with a timeout of
	// DefaultWebhookTimeout that does not follow redirects.
	HTTPClient *http.Client
	// Attempts bounds the tries of one webhook, the first included; 0
	// means DefaultAttempts.
	Attempts int
	// Backoff is the wait before the first retry of a webhook, doubled
	// before each next up to MaxBackoff; 0 means the defaults.
	Backoff, MaxBackoff time.Duration
	// WebhookPending bounds the webhooks being delivered or waiting for a
	// retry; more are dropped and counted. 0 means DefaultWebhookPending.
	WebhookPending int
	// QueueSize bounds the alerts waiting for the worker; 0 means
	// DefaultQueueSize.
	QueueSize int

	// Registry receives the metrics; nil means none are exported.
	Registry prometheus.Registerer
	// Logger receives failures; nil means slog.Default().
	Logger *slog.Logger
	// Now stamps webhooks and decides which marks have expired; nil means
	// time.Now. Marks are taken at the decision's own time.
	Now func() time.Time

	once    sync.Once
	queue   chan crossing
	rules   atomic.Pointer[rules] // Thresholds and Plans; Reload swaps them
	client  *http.Client
	key     []byte        // of the webhook signature
	hooks   chan struct{} // semaphore of pending webhooks
	metrics *metrics

	closed  atomic.Bool
	stop    chan struct{} // closed by Close: drain the queue and return
	done    chan struct{} // closed when the worker has returned
	ctx     context.Context
	cancel  context.CancelFunc
	webhook sync.WaitGroup
	started bool
}

var _ sluice.UsageRecorder = (*Notifier)(nil)

// crossing is one threshold crossed by one decision.
type crossing struct {
	accountID int64
	plan      string
	window    string
	length    time.Duration
	threshold int
	used      int64
	limit     int64
	reset     time.Time // the window's Reset after the decision
	at        time.Time // the decision's time
}

func (n *Notifier) init() {
	n.once.Do(func() {
		n.rules.Store(newRules(n.Thresholds, n.Plans))
		n.queue = make(chan crossing, orInt(n.QueueSize, DefaultQueueSize))
		n.hooks = make(chan struct{}, orInt(n.WebhookPending, DefaultWebhookPending))
		n.client = n.HTTPClient
		if n.client == nil {
			n.client = &http.Client{
				Timeout: DefaultWebhookTimeout,
				// A redirect would turn the POST into a GET: a 3xx is
				// a failed attempt, so that the operator fixes the URL.
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
		}
		n.key = SecretKey(n.WebhookSecret)
		n.metrics = newMetrics(n.Registry)
		n.stop = make(chan struct{})
		n.done = make(chan struct{})
		n.ctx, n.cancel = context.WithCancel(context.Background())
	})
}

// Start starts the worker and the purge of expired marks.
func (n *Notifier) Start() error {
	n.init()
	if n.Accounts == nil || n.Marks == nil {
		return errors.New("alert: Accounts and Marks are required")
	}
	for _, t := range n.rules.Load().thresholds {
		if t < 1 || t > 100 {
			return fmt.Errorf("alert: threshold %d is not a percent in 1..100", t)
		}
	}
	if n.started || n.closed.Load() {
		return errors.New("alert: already started or closed")
	}
	n.started = true
	go n.work()
	return nil
}

// Close stops taking alerts, lets the worker hand on those queued, and
// waits until ctx ends for the webhooks being delivered or retried; those
// still pending then are canceled (and logged as dropped). It returns ctx's
// error if it had to cancel anything.
func (n *Notifier) Close(ctx context.Context) error {
	n.init()
	if n.closed.Swap(true) {
		return nil
	}
	var err error
	if n.started {
		close(n.stop)
		select {
		case <-n.done:
		case <-ctx.Done():
			// The store calls of the alerts left fail at once.
			err = ctx.Err()
			n.cancel()
			<-n.done
		}
	}
	// The worker has returned: no webhook is added from here on.
	hooks := make(chan struct{})
	go func() { n.webhook.Wait(); close(hooks) }()
	select {
	case <-hooks:
	case <-ctx.Done():
		err = ctx.Err()
	}
	n.cancel()
	<-hooks
	return err
}

// Record finds the thresholds that e crossed and queues their alerts. It
// never blocks: a full queue drops them, counted.
func (n *Notifier) Record(e *sluice.UsageEvent) {
	d := e.Decision
	if d == nil || e.Units <= 0 || (e.Outcome != sluice.UsageAdmitted && e.Outcome != sluice.UsageShadow) {
		return
	}
	n.init()
	ts := n.rules.Load().thresholds
	if len(ts) == 0 {
		return
	}
	for _, w := range d.Statuses() {
		limit := int64(w.Limit)
		if limit <= 0 {
			continue // unlimited, or nothing can be used at all
		}
		after := w.Used()
		before := after - e.Units
		if d.Shadow {
			// Nothing was charged: the units went through uncounted.
			before, after = after, after+e.Units
		}
		if after < threshold(limit, ts[0]) || before >= threshold(limit, ts[len(ts)-1]) {
			continue // the common case: below every threshold, or past them all
		}
		for i, t := range ts {
			need := threshold(limit, t)
			if i+1 < len(ts) && threshold(limit, ts[i+1]) == need {
				continue // a small limit: the next threshold is the same use, and says more
			}
			if before < need && need <= after {
				n.enqueue(crossing{
					accountID: e.AccountID, plan: e.Plan, window: w.Name, length: w.Length,
					threshold: t, used: after, limit: limit, reset: w.Reset, at: d.Time,
				})
			}
		}
	}
}

// threshold is ⌈t·limit/100⌉, the use at which t percent of limit is
// reached, without overflow.
func threshold(limit int64, t int) int64 {
	q, r := limit/100, limit%100
	return q*int64(t) + (r*int64(t)+99)/100
}

func (n *Notifier) enqueue(c crossing) {
	if n.closed.Load() {
		n.metrics.dropped.WithLabelValues("alerts").Inc()
		return
	}
	select {
	case n.queue <- c:
	default:
		n.metrics.dropped.WithLabelValues("alerts").Inc()
		n.logger().Warn("alert: queue full; alert dropped",
			slog.Int64("account_id", c.accountID), slog.String("window", c.window), slog.Int("threshold", c.threshold))
	}
}

// work hands on the queued alerts until Close, then those left, and purges
// expired marks every PurgeInterval.
func (n *Notifier) work() {
	defer close(n.done)
	purge := time.NewTicker(PurgeInterval)
	defer purge.Stop()
	for {
		select {
		case c := <-n.queue:
			n.handle(c)
		case <-purge.C:
			n.purge()
		case <-n.stop:
			for {
				select {
				case c := <-n.queue:
					n.handle(c)
				default:
					return
				}
			}
		}
	}
}

func (n *Notifier) purge() {
	ctx, cancel := context.WithTimeout(n.ctx, storeTimeout)
	defer cancel()
	if _, err := n.Marks.DeleteExpiredAlerts(ctx, n.now()); err != nil {
		n.logger().Warn("alert: deleting expired marks failed", slog.String("error", err.Error()))
	}
}

// until is when the mark of c stops holding (see the package comment).
func (n *Notifier) until(c *crossing) time.Time {
	if n.Algorithm == sluice.Calendar && c.reset.After(c.at) {
		return c.reset
	}
	return c.at.Add(c.length)
}

// handle marks the alert of c and, if this instance won the mark, sends it
// on every channel the account has.
func (n *Notifier) handle(c crossing) {
	ctx, cancel := context.WithTimeout(n.ctx, storeTimeout)
	defer cancel()
	mark := sluice.AlertMark{AccountID: c.accountID, Window: c.window, Threshold: c.threshold, Until: n.until(&c)}
	won, err := n.Marks.MarkAlert(ctx, mark, c.at)
	if err != nil {
		n.metrics.alerts.WithLabelValues("mark_error").Inc()
		n.logger().Warn("alert: storing the mark failed; alert not sent",
			slog.Int64("account_id", c.accountID), slog.String("window", c.window), slog.Int("threshold", c.threshold),
			slog.String("error", err.Error()))
		return
	}
	if !won {
		n.metrics.alerts.WithLabelValues("duplicate").Inc()
		return
	}
	n.metrics.alerts.WithLabelValues("new").Inc()

	if n.WebhookURL != "" {
		n.sendWebhook(&c)
	}
	if n.Mailer == nil && n.Telegram == nil {
		return
	}
	a, err := n.Accounts.FindAccountByID(ctx, c.accountID)
	if err != nil {
		n.logger().Warn("alert: account lookup failed; no mail or Telegram alert",
			slog.Int64("account_id", c.accountID), slog.String("error", err.Error()))
		if n.Mailer != nil {
			n.metrics.sent.WithLabelValues("mail", "error").Inc()
		}
		if n.Telegram != nil {
			n.metrics.sent.WithLabelValues("telegram", "error").Inc()
		}
		return
	}
	text := n.text(&c)
	if n.Mailer != nil && a.Email != "" && !a.MailAlertsOff {
		err := n.Mailer.Send(&sluice.Email{To: a.Email, Subject: n.subject(&c), Text: text + mailFooter})
		n.metrics.sent.WithLabelValues("mail", result(err)).Inc()
	}
	if n.Telegram != nil && a.TelegramID != 0 {
		err := n.Telegram.SendText(a.TelegramID, text)
		n.metrics.sent.WithLabelValues("telegram", result(err)).Inc()
		if err != nil {
			n.logger().Warn("alert: Telegram alert not queued",
				slog.Int64("account_id", c.accountID), slog.String("error", err.Error()))
		}
	}
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func (n *Notifier) now() time.Time {
	if n.Now != nil {
		return n.Now()
	}
	return time.Now()
}

func (n *Notifier) logger() *slog.Logger {
	if n.Logger != nil {
		return n.Logger
	}
	return slog.Default()
}

func orInt(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// planName is the plan's display name, or its id if it is not configured.
func (n *Notifier) planName(id string) string {
	if p := n.rules.Load().plans[id]; p != nil && p.Name != "" {
		return p.Name
	}
	return id
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// rules are the thresholds and plans of a Notifier, replaced whole by
// Reload; a decision reads them once.
type rules struct {
	thresholds []int // ascending, unique
	plans      map[string]*sluice.Plan
}

func newRules(thresholds []int, plans []sluice.Plan) *rules {
	r := &rules{thresholds: slices.Clone(thresholds)}
	if r.thresholds == nil {
		r.thresholds = DefaultThresholds()
	}
	slices.Sort(r.thresholds)
	r.thresholds = slices.Compact(r.thresholds)
	plans = slices.Clone(plans)
	r.plans = make(map[string]*sluice.Plan, len(plans))
	for i := range plans {
		r.plans[plans[i].ID] = &plans[i]
	}
	return r
}

// Reload replaces the thresholds and the plans (their names) for the
// decisions recorded after it, as a configuration reload does; crossings
// already queued are sent as they were found. Each threshold must be a
// percent in 1..100; an empty list stops new alerts. Safe for concurrent
// use with Record.
func (n *Notifier) Reload(thresholds []int, plans []sluice.Plan) error {
	for _, t := range thresholds {
		if t < 1 || t > 100 {
			return fmt.Errorf("alert: threshold %d is not a percent in 1..100", t)
		}
	}
	n.init()
	if thresholds == nil {
		thresholds = []int{}
	}
	n.rules.Store(newRules(thresholds, plans))
	return nil
}
