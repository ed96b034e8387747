package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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

	"github.com/sluicehq/sluice"
)

// PayloadType is the type of every alert webhook.
const PayloadType = "quota.threshold"

// Payload is the JSON body of an alert webhook. Reset and At are Unix
// seconds: when the window next frees units (as X-RateLimit-Reset-*) and
// when the threshold was crossed.
type Payload struct {
	Type      string `json:"type"`
	AccountID int64  `json:"account_id"`
	Plan      string `json:"plan"`   // the plan's id
	Window    string `json:"window"` // "hour" or "day"
	Threshold int    `json:"threshold"`
	Used      int64  `json:"used"`
	Limit     int64  `json:"limit"`
	Reset     int64  `json:"reset"`
	At        int64  `json:"at"`
}

// Headers of a signed webhook (Standard Webhooks).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretKey is the HMAC key of a webhook secret, as Standard Webhooks
// reads it: a secret "whsec_<base64>" is the bytes the base64 encodes;
// any other secret (or one whose base64 does not decode) is its own bytes.
func SecretKey(secret string) []byte {
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if k, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return k
		}
	}
	return []byte(secret)
}

// Sign returns the webhook-signature value of a webhook: "v1," and the
// base64 of the HMAC-SHA256, under key, of "<id>.<timestamp>.<body>".
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, timestamp, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// sendWebhook queues the webhook of c for delivery in a goroutine of its
// own; if WebhookPending webhooks are already pending it is dropped.
func (n *Notifier) sendWebhook(c *crossing) {
	body, err := json.Marshal(Payload{
		Type: PayloadType, AccountID: c.accountID, Plan: c.plan, Window: c.window, Threshold: c.threshold,
		Used: c.used, Limit: c.limit, Reset: c.reset.Unix(), At: c.at.Unix(),
	})
	if err != nil {
		panic(err) // a struct of numbers and strings always encodes
	}
	select {
	case n.hooks <- struct{}{}:
	default:
		n.metrics.dropped.WithLabelValues("webhook").Inc()
		n.logger().Warn("alert: too many webhooks pending; webhook dropped", slog.Int64("account_id", c.accountID))
		return
	}
	id := "msg_" + sluice.RandomString(24)
	n.webhook.Add(1)
	go func() {
		defer n.webhook.Done()
		defer func() { <-n.hooks }()
		n.deliver(id, body)
	}()
}

// deliver posts the webhook until an attempt succeeds (a 2xx answer), the
// attempts run out or Close cancels it, waiting Backoff after the first
// failure and twice as long after each next, up to MaxBackoff. Every
// attempt has the same id and a fresh timestamp and signature.
func (n *Notifier) deliver(id string, body []byte) {
	attempts := orInt(n.Attempts, DefaultAttempts)
	wait := n.Backoff
	if wait <= 0 {
		wait = DefaultBackoff
	}
	maxWait := n.MaxBackoff
	if maxWait <= 0 {
		maxWait = DefaultMaxBackoff
	}
	for try := 1; ; try++ {
		err := n.post(id, body)
		if err == nil {
			n.metrics.sent.WithLabelValues("webhook", "ok").Inc()
			return
		}
		if n.ctx.Err() != nil {
			n.metrics.sent.WithLabelValues("webhook", "canceled").Inc()
			n.logger().Warn("alert: webhook canceled at shutdown", slog.String("webhook_id", id))
			return
		}
		if try >= attempts {
			n.metrics.sent.WithLabelValues("webhook", "failed").Inc()
			n.logger().Warn("alert: webhook failed; giving up", slog.String("webhook_id", id),
				slog.Int("attempts", try), slog.String("error", err.Error()))
			return
		}
		n.metrics.retries.Inc()
		t := time.NewTimer(min(wait, maxWait))
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			n.metrics.sent.WithLabelValues("webhook", "canceled").Inc()
			n.logger().Warn("alert: webhook canceled at shutdown", slog.String("webhook_id", id))
			return
		}
		wait = min(wait*2, maxWait)
	}
}

// post makes one attempt. Errors name the status but never the URL, which
// may hold credentials.
func (n *Notifier) post(id string, body []byte) error {
	ts := n.now().Unix()
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, n.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: invalid URL")
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "sluice-alerts")
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(n.key, id, ts, body))
	resp, err := n.client.Do(req)
	if err != nil {
		if err := context.Cause(n.ctx); err != nil {
			return err
		}
		return fmt.Errorf("webhook: %s", redactErr(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook: status %d", resp.StatusCode)
	}
	return nil
}

// redactErr is the text of a client error without the URL that net/http
// puts in it.
func redactErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
