package http

import (
	"bytes"
	"encoding/csv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// The usage history (CONTRACT.md §10): the recording of every decision of
// the image endpoint, and the endpoints that read it back.
//
// Decisions the contract leaves open:
//
//   - A request for more images than a window's limit (a 400 naming "n")
//     is not a quota decision and is not recorded; a 503 either.
//   - A refund is recorded at the time of the decision it refunds, so that
//     a bucket's images never go negative.
//   - from and to are echoed as Unix seconds; a bucket is in the answer
//     when its start is in [from, to). With neither, the last 24 hours up to
//     now; with one, 24 hours from or up to it.
//   - A bad parameter is 400 invalid_request naming it; a range of more
//     than MaxHistoryBuckets buckets names "from".
//   - GET /admin/usage/top counts the last 60 minutes (window=hour) or the
//     last 24 hours (window=day, the default) up to the end of the current
//     minute or hour; limit is 1 to MaxTopLimit (default 10).
//   - CSV has the columns start (Unix seconds), time (RFC 3339), group
//     (only with group_by), images, requests, rejected, refunded.

// Bounds of the history endpoints.
const (
	MaxHistoryBuckets = 10_000
	DefaultTopLimit   = 10
	MaxTopLimit       = 100
	// maxHistoryTime bounds the times of a query: 9999-12-31T23:59:59Z.
	maxHistoryTime = 253402300799
)

// recordTake records the decision d on a request for n units of model with
// s.Usage. It keeps model for a later refund. The event lives in q, which
// the request allocated already, so that recording allocates nothing.
func (s *Server) recordTake(q *quotaCtx, model string, n int64, d *sluice.Decision) {
	q.model = model
	if s.Usage == nil || !d.Allowed && d.RetryAfter == sluice.InfDuration {
		return
	}
	e := s.usageEvent(q, n, d)
	switch {
	case !d.Allowed:
		e.Outcome = sluice.UsageRejected
	case d.Shadow:
		e.Outcome = sluice.UsageShadow
	default:
		e.Outcome = sluice.UsageAdmitted
	}
	if !d.Allowed || d.Shadow {
		e.Window = d.Windows[max(d.Blocking, 0)].Name
	}
	e.Decision = d
	s.Usage.Record(e)
	e.Decision = nil
}

// recordRefund records that the n units charged by d were given back.
func (s *Server) recordRefund(q *quotaCtx, n int64, d *sluice.Decision) {
	if s.Usage == nil {
		return
	}
	e := s.usageEvent(q, n, d)
	e.Outcome = sluice.UsageRefunded
	s.Usage.Record(e)
}

func (s *Server) usageEvent(q *quotaCtx, n int64, d *sluice.Decision) *sluice.UsageEvent {
	e := &q.event
	*e = sluice.UsageEvent{AccountID: q.account.ID, Plan: q.plan.ID, KeyID: q.keyID, Channel: sluice.ChannelAPI,
		Model: q.model, Time: d.Time, Units: n}
	return e
}

// historyParams are the parameters of a history request.
type historyParams struct {
	q   sluice.UsageQuery
	csv bool
}

// parseHistoryParams reads granularity, from, to, group_by and format from
// v (and the Accept header for CSV), with the defaults of CONTRACT.md §10
// at now. Every error is an invalid_request naming the parameter.
func parseHistoryParams(v url.Values, accept string, now time.Time) (historyParams, error) {
	var p historyParams
	p.q.Granularity = v.Get("granularity")
	if p.q.Granularity == "" {
		p.q.Granularity = sluice.GranularityHour
	}
	length, ok := sluice.UsageGranularity(p.q.Granularity)
	if !ok {
		return p, sluice.FieldError("granularity", "granularity must be minute, hour or day.")
	}
	from, hasFrom, err := parseHistoryTime(v, "from")
	if err != nil {
		return p, err
	}
	to, hasTo, err := parseHistoryTime(v, "to")
	if err != nil {
		return p, err
	}
	switch {
	case !hasFrom && !hasTo:
		to = now.Truncate(time.Second).Add(time.Second)
		from = to.Add(-24 * time.Hour)
	case !hasFrom:
		from = to.Add(-24 * time.Hour)
	case !hasTo:
		to = from.Add(24 * time.Hour)
	}
	if from.After(to) {
		return p, sluice.FieldError("from", "from must not be after to.")
	}
	// Sub saturates, so a range of centuries is still too many buckets.
	if n := (to.Sub(from) + length - 1) / length; n > MaxHistoryBuckets {
		return p, sluice.FieldError("from", "The range from %s to %s holds more than %d buckets of a %s; narrow it or choose a coarser granularity.",
			from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), MaxHistoryBuckets, p.q.Granularity)
	}
	p.q.From, p.q.To = from, to
	switch g := v.Get("group_by"); g {
	case "", sluice.GroupByKey, sluice.GroupByChannel, sluice.GroupByModel:
		p.q.GroupBy = g
	default:
		return p, sluice.FieldError("group_by", "group_by must be key, channel or model.")
	}
	switch f := v.Get("format"); f {
	case "csv":
		p.csv = true
	case "json":
	case "":
		p.csv = strings.Contains(strings.ToLower(accept), "text/csv")
	default:
		return p, sluice.FieldError("format", "format must be json or csv.")
	}
	return p, nil
}

// parseHistoryTime reads the time parameter name: Unix seconds or RFC 3339,
// from 1970 to the year 9999.
func parseHistoryTime(v url.Values, name string) (time.Time, bool, error) {
	s := v.Get(name)
	if s == "" {
		return time.Time{}, false, nil
	}
	bad := sluice.FieldError(name, "%s must be Unix seconds or an RFC 3339 time like 2026-03-10T00:00:00Z, from 1970 to 9999.", name)
	var t time.Time
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > maxHistoryTime {
			return t, false, bad
		}
		t = time.Unix(n, 0).UTC()
	} else {
		var err error
		if t, err = time.Parse(time.RFC3339, s); err != nil {
			return t, false, bad
		}
		if u := t.Unix(); u < 0 || u > maxHistoryTime {
			return t, false, bad
		}
	}
	return t, true, nil
}

type historyJSON struct {
	Granularity string       `json:"granularity"`
	From        int64        `json:"from"`
	To          int64        `json:"to"`
	GroupBy     string       `json:"group_by,omitempty"`
	Buckets     []bucketJSON `json:"buckets"`
}

type bucketJSON struct {
	Start    int64   `json:"start"`
	Group    *string `json:"group,omitempty"`
	Images   int64   `json:"images"`
	Requests int64   `json:"requests"`
	Rejected int64   `json:"rejected"`
	Refunded int64   `json:"refunded"`
}

// handleUsageHistory handles GET /v1/usage/history: the account's own
// history. Like GET /v1/usage it takes an API key (whose plan must include
// API access) or a session token.
func (s *Server) handleUsageHistory(w http.ResponseWriter, r *http.Request) {
	pr, err := s.authKeyOrSession(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	q, ok := s.resolveAccount(w, r, pr, pr.key != nil)
	if !ok {
		return
	}
	p, err := parseHistoryParams(r.URL.Query(), r.Header.Get("Accept"), s.now())
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	p.q.AccountID = q.account.ID
	s.writeHistory(w, r, p)
}

// handleAdminUsageHistory handles GET /admin/usage/history?account=ID&….
func (s *Server) handleAdminUsageHistory(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	raw := v.Get("account")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id <= 0 {
		s.Error(w, r, sluice.FieldError("account", "account must be the ID of an account, like account=42."))
		return
	}
	p, err := parseHistoryParams(v, r.Header.Get("Accept"), s.now())
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if _, err := s.Accounts.FindAccountByID(r.Context(), id); err != nil {
		if sluice.ErrorCode(err) == sluice.ENOTFOUND {
			err = sluice.Errorf(sluice.ENOTFOUND, "No account has the ID %d.", id)
		}
		s.Error(w, r, err)
		return
	}
	p.q.AccountID = id
	s.writeHistory(w, r, p)
}

var errNoHistory = sluice.Errorf(sluice.ENOTFOUND, "The usage history is not enabled on this gateway.")

// writeHistory answers the query p in JSON or CSV.
func (s *Server) writeHistory(w http.ResponseWriter, r *http.Request, p historyParams) {
	if s.History == nil {
		s.Error(w, r, errNoHistory)
		return
	}
	buckets, err := s.History.UsageHistory(r.Context(), p.q)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if p.csv {
		s.writeHistoryCSV(w, r, p, buckets)
		return
	}
	out := &historyJSON{Granularity: p.q.Granularity, From: p.q.From.Unix(), To: p.q.To.Unix(), GroupBy: p.q.GroupBy,
		Buckets: make([]bucketJSON, len(buckets))}
	for i := range buckets {
		b := &buckets[i]
		out.Buckets[i] = bucketJSON{Start: b.Start.Unix(), Images: b.Images, Requests: b.Requests, Rejected: b.Rejected, Refunded: b.Refunded}
		if p.q.GroupBy != "" {
			out.Buckets[i].Group = &b.Group
		}
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

func (s *Server) writeHistoryCSV(w http.ResponseWriter, r *http.Request, p historyParams, buckets []sluice.UsageBucket) {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	header := []string{"start", "time", "images", "requests", "rejected", "refunded"}
	if p.q.GroupBy != "" {
		header = []string{"start", "time", "group", "images", "requests", "rejected", "refunded"}
	}
	cw.Write(header)
	rec := make([]string, 0, len(header))
	for i := range buckets {
		b := &buckets[i]
		rec = append(rec[:0], strconv.FormatInt(b.Start.Unix(), 10), b.Start.UTC().Format(time.RFC3339))
		if p.q.GroupBy != "" {
			rec = append(rec, b.Group)
		}
		rec = append(rec, strconv.FormatInt(b.Images, 10), strconv.FormatInt(b.Requests, 10),
			strconv.FormatInt(b.Rejected, 10), strconv.FormatInt(b.Refunded, 10))
		cw.Write(rec)
	}
	cw.Flush()
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="usage-`+strconv.FormatInt(p.q.AccountID, 10)+"-"+p.q.Granularity+`.csv"`)
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
}

type topJSON struct {
	Accounts []topAccountJSON `json:"accounts"`
}

type topAccountJSON struct {
	AccountID int64   `json:"account_id"`
	Email     *string `json:"email"` // null for an account made by the bot
	Plan      string  `json:"plan"`
	Images    int64   `json:"images"`
}

// parseTopParams reads window and limit of GET /admin/usage/top and
// returns the range it covers at now.
func parseTopParams(v url.Values, now time.Time) (from, to time.Time, limit int, err error) {
	limit = DefaultTopLimit
	if raw := v.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > MaxTopLimit {
			return from, to, 0, sluice.FieldError("limit", "limit must be a whole number from 1 to %d.", MaxTopLimit)
		}
		limit = n
	}
	switch v.Get("window") {
	case "hour":
		to = now.Truncate(time.Minute).Add(time.Minute)
		from = to.Add(-time.Hour)
	case "day", "":
		to = now.Truncate(time.Hour).Add(time.Hour)
		from = to.Add(-24 * time.Hour)
	default:
		return from, to, 0, sluice.FieldError("window", "window must be hour or day.")
	}
	return from, to, limit, nil
}

// handleAdminUsageTop handles GET /admin/usage/top?window=hour|day&limit=N:
// the accounts that used the most images, most first.
func (s *Server) handleAdminUsageTop(w http.ResponseWriter, r *http.Request) {
	from, to, limit, err := parseTopParams(r.URL.Query(), s.now())
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if s.History == nil {
		s.Error(w, r, errNoHistory)
		return
	}
	top, err := s.History.TopUsage(r.Context(), from, to, limit)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	out := &topJSON{Accounts: make([]topAccountJSON, 0, len(top))}
	for _, u := range top {
		a := topAccountJSON{AccountID: u.AccountID, Images: u.Images}
		acct, err := s.Accounts.FindAccountByID(r.Context(), u.AccountID)
		switch {
		case err == nil:
			a.Plan = acct.Plan
			if acct.Email != "" {
				a.Email = &acct.Email
			}
		case sluice.ErrorCode(err) != sluice.ENOTFOUND:
			s.Error(w, r, err)
			return
		}
		out.Accounts = append(out.Accounts, a)
	}
	s.writeJSON(w, r, http.StatusOK, out)
}
