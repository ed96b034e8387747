package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// windowView is one window of an account's quota, as the gauges show it.
type windowView struct {
	ID        string // "hour", "day"
	Title     string // "Hour"
	Length    string // "1h", for a window configured shorter or longer
	Unlimited bool
	Limit     int64
	Used      int64
	Remaining int64
	Reset     time.Time
	Percent   int    // of the limit used, 0 to 100
	Level     string // "ok", "warn" (80% or more), "full"
}

// usageView is where an account stands.
type usageView struct {
	Windows []windowView
	Error   string // the quota service could not answer
	LiveURL string // where the page's script polls for fresh figures
}

type planRow struct {
	Plan    *sluice.Plan
	Current bool
}

// accountView is the data of /account and of the operator's account page.
type accountView struct {
	Account  *sluice.Account
	Plan     *sluice.Plan
	Usage    usageView
	Hourly   *chart // nil: no usage history
	Daily    *chart
	ChartErr string
	History  bool // the usage history is available

	Keys       []*sluice.APIKey
	NewKey     string // shown once, right after it was made
	NewKeyName string
	KeyError   string

	TelegramCode    string
	TelegramExpires time.Time
	TelegramLink    string

	Plans []planRow

	AlertsAvailable bool
	AlertsOn        bool

	AuditAvailable bool
	Events         []eventView
}

// policy returns the account's plan and quota policy.
func (s *Server) policy(a *sluice.Account) (*sluice.Plan, sluice.Policy, error) {
	c := s.catalog()
	p := c.byID[a.Plan]
	if p == nil {
		return nil, sluice.Policy{}, fmt.Errorf("account %d: plan %q is not configured", a.ID, a.Plan)
	}
	hour, day := a.Limits(p)
	return p, c.windows.AccountPolicy(hour, day), nil
}

// usage peeks at the account's counters, charging nothing.
func (s *Server) usage(ctx context.Context, a *sluice.Account) usageView {
	_, pol, err := s.policy(a)
	if err != nil {
		return usageView{Error: "This account's plan is not configured."}
	}
	if s.Quota == nil {
		return usageView{Error: "Usage is not available."}
	}
	d, err := s.Quota.Peek(ctx, sluice.AccountQuotaKey(a.ID), &pol)
	if err != nil {
		s.logger().Warn("console: peek usage", "account_id", a.ID, "error", err.Error())
		return usageView{Error: "Usage is not available right now."}
	}
	var u usageView
	for i, w := range d.Statuses() {
		v := windowView{ID: w.Name, Title: titles[w.Name], Length: lengthText(w.Length)}
		if i < len(pol.Windows) && pol.Windows[i].Limit.IsUnlimited() || w.Limit.IsUnlimited() {
			// Unlimited windows count too (CONTRACT.md §6).
			v.Unlimited, v.Used = true, max(w.Used(), 0)
		} else {
			v.Limit = int64(w.Limit)
			v.Remaining = max(w.Remaining, 0)
			v.Used = max(w.Used(), 0)
			v.Reset = w.Reset
			if v.Limit > 0 {
				v.Percent = int(min(v.Used*100/v.Limit, 100))
			} else {
				v.Percent = 100
			}
			v.Level = level(v.Used, v.Limit)
		}
		u.Windows = append(u.Windows, v)
	}
	return u
}

func level(used, limit int64) string {
	switch {
	case used >= limit:
		return "full"
	case used*100 >= limit*80:
		return "warn"
	}
	return "ok"
}

var titles = map[string]string{"hour": "Hour", "day": "Day"}

func lengthText(d time.Duration) string {
	switch d {
	case time.Hour:
		return "rolling hour"
	case 24 * time.Hour:
		return "rolling day"
	}
	return d.String() + " window"
}

func (s *Server) planRows(current string) []planRow {
	plans := s.catalog().plans
	rows := make([]planRow, 0, len(plans))
	for i := range plans {
		rows = append(rows, planRow{Plan: &plans[i], Current: plans[i].ID == current})
	}
	return rows
}

// view gathers everything the account pages show about a.
func (s *Server) view(ctx context.Context, a *sluice.Account, forOps bool) (*accountView, error) {
	v := &accountView{Account: a, Plan: s.catalog().byID[a.Plan], Usage: s.usage(ctx, a), Plans: s.planRows(a.Plan)}
	if v.Plan == nil {
		v.Plan = &sluice.Plan{ID: a.Plan, Name: a.Plan}
	}
	if forOps || v.Plan.API {
		keys, err := s.Accounts.ListAPIKeys(ctx, a.ID)
		if err != nil {
			return nil, err
		}
		v.Keys = keys
	}
	if s.Usage != nil {
		v.History = true
		h, d, err := s.charts(ctx, a.ID)
		if err != nil {
			s.logger().Warn("console: usage history", "account_id", a.ID, "error", err.Error())
			v.ChartErr = "The usage history is not available right now."
		}
		v.Hourly, v.Daily = h, d
	}
	if s.Alerts != nil && !forOps {
		v.AlertsAvailable, v.AlertsOn = true, !a.MailAlertsOff
	}
	if s.Audit != nil {
		v.AuditAvailable = true
		evs, err := s.Audit.ListAudit(ctx, sluice.AuditFilter{AccountID: a.ID, Limit: 20})
		if err != nil {
			s.logger().Warn("console: audit", "account_id", a.ID, "error", err.Error())
		}
		v.Events = s.events(ctx, evs, a.ID, forOps, false)
	}
	return v, nil
}

// handleAccount handles GET /account.
func (s *Server) handleAccount(w http.ResponseWriter, r *http.Request) {
	s.renderAccount(w, r, http.StatusOK, nil, notice(r))
}

// renderAccount renders /account with status; edit, if not nil, adds what
// the page shows once (a new key, a link code) before it is rendered.
func (s *Server) renderAccount(w http.ResponseWriter, r *http.Request, status int, edit func(*accountView), note string) {
	a := accountOf(r)
	v, err := s.view(r.Context(), a, false)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	v.Usage.LiveURL = "/account/usage.json"
	if edit != nil {
		edit(v)
	}
	s.render(w, r, status, "account", &page{Title: "Your account", User: a, Notice: note, Data: v})
}

type windowJSON struct {
	Limit     *int64 `json:"limit"`
	Used      int64  `json:"used"`
	Remaining *int64 `json:"remaining"`
	Reset     *int64 `json:"reset"`
	Percent   int    `json:"percent"`
}

// handleUsageJSON handles GET /account/usage.json, which the page's script
// polls to keep the gauges live: the shape of GET /v1/usage, for the
// session of the cookie.
func (s *Server) handleUsageJSON(w http.ResponseWriter, r *http.Request) {
	a := accountOf(r)
	u := s.usage(r.Context(), a)
	if u.Error != "" {
		writeJSONError(w, http.StatusServiceUnavailable, sluice.EUNAVAILABLE, u.Error)
		return
	}
	out := map[string]any{"plan": a.Plan}
	for _, v := range u.Windows {
		j := windowJSON{Used: v.Used, Percent: v.Percent}
		if !v.Unlimited {
			l, rem, reset := v.Limit, v.Remaining, v.Reset.Unix()
			j.Limit, j.Remaining, j.Reset = &l, &rem, &reset
		}
		out[v.ID] = j
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// keyName checks the name of a new key as the API does.
func keyName(v string) (string, string) {
	v = strings.TrimSpace(v)
	switch {
	case v == "":
		return "", "Give the key a name, like \"laptop\" or \"batch job\"."
	case utf8.RuneCountInString(v) > MaxKeyName:
		return "", fmt.Sprintf("The name can be at most %d characters.", MaxKeyName)
	case !utf8.ValidString(v):
		return "", "The name must be text."
	}
	return v, ""
}

// handleCreateKey handles the new-key form. The key is shown on the page
// that answers the POST, once; it is not kept anywhere it could be shown
// again.
func (s *Server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	a := accountOf(r)
	plan := s.catalog().byID[a.Plan]
	if plan == nil || !plan.API {
		s.message(w, r, http.StatusForbidden, "No API access", "Your plan does not include API access, so it has no API keys.")
		return
	}
	name, problem := keyName(r.PostForm.Get("name"))
	if problem != "" {
		s.renderAccount(w, r, http.StatusBadRequest, func(v *accountView) { v.KeyError = problem }, "")
		return
	}
	keys, err := s.Accounts.ListAPIKeys(r.Context(), a.ID)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if len(keys) >= MaxKeysPerAccount {
		s.renderAccount(w, r, http.StatusBadRequest, func(v *accountView) {
			v.KeyError = fmt.Sprintf("An account can have at most %d keys. Revoke one first.", MaxKeysPerAccount)
		}, "")
		return
	}
	key, id, hash := sluice.NewAPIKey()
	k := &sluice.APIKey{ID: id, AccountID: a.ID, Name: name, Hash: hash}
	if err := s.Accounts.CreateAPIKey(r.Context(), k); err != nil {
		s.internalError(w, r, err)
		return
	}
	s.renderAccount(w, r, http.StatusOK, func(v *accountView) { v.NewKey, v.NewKeyName = key, name }, "")
}

// findKey returns the live key id of the account.
func (s *Server) findKey(ctx context.Context, accountID int64, id string) (*sluice.APIKey, error) {
	keys, err := s.Accounts.ListAPIKeys(ctx, accountID)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.ID == id {
			return k, nil
		}
	}
	return nil, nil
}

// handleRevokePage asks to confirm the revocation of a key.
func (s *Server) handleRevokePage(w http.ResponseWriter, r *http.Request) {
	a := accountOf(r)
	k, err := s.findKey(r.Context(), a.ID, r.PathValue("id"))
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if k == nil {
		s.notFound(w, r)
		return
	}
	s.render(w, r, http.StatusOK, "revoke", &page{Title: "Revoke a key", User: a,
		Data: map[string]any{"Key": k, "Action": "/account/keys/" + k.ID + "/revoke", "Back": "/account#keys"}})
}

// handleRevoke revokes a key of the signed-in account.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	a := accountOf(r)
	err := s.Accounts.RevokeAPIKey(r.Context(), a.ID, r.PathValue("id"), s.now())
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		s.notFound(w, r)
		return
	} else if err != nil {
		s.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, "/account?done=key-revoked#keys", http.StatusSeeOther)
}

// handleTelegram makes a Telegram link code and shows it once.
func (s *Server) handleTelegram(w http.ResponseWriter, r *http.Request) {
	a := accountOf(r)
	code := sluice.RandomString(telegramCodeLen)
	expires := s.now().Add(TelegramLinkTTL)
	if err := s.Accounts.CreateToken(r.Context(), sluice.TokenTelegramLink, sluice.HashToken(code), a.ID, expires); err != nil {
		s.internalError(w, r, err)
		return
	}
	s.renderAccount(w, r, http.StatusOK, func(v *accountView) {
		v.TelegramCode, v.TelegramExpires = code, expires
		if bot := s.telegramBot(); bot != "" {
			v.TelegramLink = "https://t.me/" + bot + "?start=" + code
		}
	}, "")
}

// handleAlerts turns the account's mail alerts on or off.
func (s *Server) handleAlerts(w http.ResponseWriter, r *http.Request) {
	if s.Alerts == nil {
		s.notFound(w, r)
		return
	}
	on, ok := parseOnOff(r.PostForm.Get("email"))
	if !ok {
		s.badForm(w, r)
		return
	}
	if err := s.Alerts.SetMailAlerts(r.Context(), accountOf(r).ID, on); err != nil {
		s.internalError(w, r, err)
		return
	}
	done := "alerts-off"
	if on {
		done = "alerts-on"
	}
	http.Redirect(w, r, "/account?done="+done+"#alerts", http.StatusSeeOther)
}

// parseOnOff reads a form's on/off choice.
func parseOnOff(v string) (on, ok bool) {
	switch v {
	case "on", "true", "1":
		return true, true
	case "off", "false", "0":
		return false, true
	}
	return false, false
}
