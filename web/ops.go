package web

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// MaxOverride bounds a per-account limit, as the admin API does.
const MaxOverride = 10_000_000

// opsPageSize is the number of accounts on one page of the search.
const opsPageSize = 25

func (s *Server) handleOpsLoginPage(w http.ResponseWriter, r *http.Request) {
	if s.opsSignedIn(r) {
		http.Redirect(w, r, "/ops/", http.StatusSeeOther)
		return
	}
	s.render(w, r, http.StatusOK, "ops_login", &page{Title: "Operator sign-in", Ops: true})
}

// handleOpsLogin signs the operator in with the admin token. Attempts
// count against the per-IP limit of POST /auth/login.
func (s *Server) handleOpsLogin(w http.ResponseWriter, r *http.Request) {
	p := &page{Title: "Operator sign-in", Ops: true}
	if err := s.Auth.CheckAuthLimit(r.Context(), sluice.AuthLogin, s.clientIP(r)); err != nil {
		s.authFailed(w, r, "ops_login", p, err)
		return
	}
	if !s.adminTokenOK(r.PostForm.Get("token")) {
		p.Errors = map[string]string{"token": "This is not the admin token."}
		s.render(w, r, http.StatusUnauthorized, "ops_login", p)
		return
	}
	exp := s.now().Add(OpsSessionTTL)
	s.setCookie(w, r, opsCookie, s.opsCookieValue(exp), "/ops/", exp)
	http.Redirect(w, r, "/ops/", http.StatusSeeOther)
}

func (s *Server) handleOpsLogout(w http.ResponseWriter, r *http.Request) {
	s.setCookie(w, r, opsCookie, "", "/ops/", time.Time{})
	http.Redirect(w, r, "/ops/login", http.StatusSeeOther)
}

type accountRow struct {
	Account *sluice.Account
	Images  int64
}

type opsHome struct {
	Query       string
	Searchable  bool
	Results     []*sluice.Account
	NextAfter   int64  // 0: no next page
	NextURL     string // the next page's link
	TopHour     []accountRow
	TopDay      []accountRow
	TopError    string
	HistoryOK   bool
	SearchError string
}

// parseAfter reads the "after" paging parameter: a non-negative ID.
func parseAfter(v string) (int64, bool) {
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// handleOpsHome handles /ops/: the account search and the top accounts.
func (s *Server) handleOpsHome(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	text := strings.TrimSpace(q.Get("q"))
	if len(text) > 254 {
		text = text[:254]
	}
	after, ok := parseAfter(q.Get("after"))
	if !ok {
		s.badForm(w, r)
		return
	}
	h := &opsHome{Query: text, Searchable: s.Search != nil, HistoryOK: s.Usage != nil}
	if s.Search != nil {
		as, err := s.Search.SearchAccounts(r.Context(), sluice.AccountQuery{Text: text, After: after, Limit: opsPageSize + 1})
		if err != nil {
			s.logger().Warn("console: search accounts", "error", err.Error())
			h.SearchError = "The search is not available right now."
		}
		if len(as) > opsPageSize {
			as = as[:opsPageSize]
			h.NextAfter = as[len(as)-1].ID
			h.NextURL = "/ops/?" + url.Values{"q": {text}, "after": {strconv.FormatInt(h.NextAfter, 10)}}.Encode()
		}
		h.Results = as
	}
	if s.Usage != nil {
		now := s.now()
		var err error
		if h.TopHour, err = s.top(r.Context(), now.Add(-time.Hour), now); err == nil {
			h.TopDay, err = s.top(r.Context(), now.Add(-24*time.Hour), now)
		}
		if err != nil {
			s.logger().Warn("console: top usage", "error", err.Error())
			h.TopError = "The top accounts are not available right now."
		}
	}
	s.render(w, r, http.StatusOK, "ops_home", &page{Title: "Accounts", Ops: true, Data: h})
}

func (s *Server) top(ctx context.Context, from, to time.Time) ([]accountRow, error) {
	ts, err := s.Usage.TopUsage(ctx, from, to.Add(time.Second), 10)
	if err != nil {
		return nil, err
	}
	out := make([]accountRow, 0, len(ts))
	for _, t := range ts {
		a, err := s.Accounts.FindAccountByID(ctx, t.AccountID)
		if err != nil {
			a = &sluice.Account{ID: t.AccountID}
		}
		out = append(out, accountRow{Account: a, Images: t.Images})
	}
	return out, nil
}

// opsAccount returns the account of an operator route, or answers 404.
func (s *Server) opsAccount(w http.ResponseWriter, r *http.Request) (*sluice.Account, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.notFound(w, r)
		return nil, false
	}
	a, err := s.Accounts.FindAccountByID(r.Context(), id)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		s.notFound(w, r)
		return nil, false
	} else if err != nil {
		s.internalError(w, r, err)
		return nil, false
	}
	return a, true
}

type opsAccountView struct {
	*accountView
	HourValue, DayValue string // the override form's values
}

// Base is the part of the view that the user's own page shows too.
func (v *opsAccountView) Base() *accountView { return v.accountView }

func (s *Server) handleOpsAccount(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	s.renderOpsAccount(w, r, http.StatusOK, a, notice(r), nil)
}

func (s *Server) renderOpsAccount(w http.ResponseWriter, r *http.Request, status int, a *sluice.Account, note string, p *page) {
	v, err := s.view(r.Context(), a, true)
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	ov := &opsAccountView{accountView: v}
	if a.Override != nil {
		ov.HourValue, ov.DayValue = limitValue(a.Override.Hour), limitValue(a.Override.Day)
	}
	if p == nil {
		p = &page{}
	}
	if p.Form != nil {
		ov.HourValue, ov.DayValue = p.Form["hour"], p.Form["day"]
	}
	p.Title, p.Ops, p.Notice, p.Data = accountTitle(a), true, note, ov
	s.render(w, r, status, "ops_account", p)
}

func accountTitle(a *sluice.Account) string {
	if a.Email != "" {
		return a.Email
	}
	return "Account " + strconv.FormatInt(a.ID, 10)
}

func limitValue(l sluice.Limit) string {
	if l.IsUnlimited() {
		return ""
	}
	return strconv.FormatInt(int64(l), 10)
}

func (s *Server) handleOpsPlan(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	plan := r.PostForm.Get("plan")
	if s.catalog().byID[plan] == nil {
		s.renderOpsAccount(w, r, http.StatusBadRequest, a, "", &page{Errors: map[string]string{"plan": "Choose one of the plans."}})
		return
	}
	if err := s.Accounts.SetPlan(r.Context(), a.ID, plan); err != nil {
		s.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, accountPath(a.ID)+"?done=plan-changed", http.StatusSeeOther)
}

func accountPath(id int64) string { return "/ops/accounts/" + strconv.FormatInt(id, 10) }

// parseLimitField reads one limit of the override form: a whole number
// from 0 to MaxOverride, or empty (or "unlimited") for no limit. problem
// says what is wrong, in words.
func parseLimitField(v string) (l sluice.Limit, problem string) {
	v = strings.TrimSpace(strings.ReplaceAll(v, ",", ""))
	if v == "" || strings.EqualFold(v, "unlimited") {
		return sluice.Unlimited, ""
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > MaxOverride {
		return 0, "Enter a whole number from 0 to 10,000,000, or leave it empty for no limit."
	}
	return sluice.Limit(n), ""
}

func (s *Server) handleOpsLimits(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	hv, dv := r.PostForm.Get("hour"), r.PostForm.Get("day")
	hour, hp := parseLimitField(hv)
	day, dp := parseLimitField(dv)
	if hp != "" || dp != "" {
		errs := map[string]string{}
		if hp != "" {
			errs["hour"] = hp
		}
		if dp != "" {
			errs["day"] = dp
		}
		s.renderOpsAccount(w, r, http.StatusBadRequest, a, "", &page{Errors: errs, Form: map[string]string{"hour": hv, "day": dv}})
		return
	}
	if err := s.Accounts.SetOverride(r.Context(), a.ID, &sluice.LimitOverride{Hour: hour, Day: day}); err != nil {
		s.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, accountPath(a.ID)+"?done=limits-changed", http.StatusSeeOther)
}

func (s *Server) handleOpsDeleteLimits(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	if err := s.Accounts.SetOverride(r.Context(), a.ID, nil); err != nil {
		s.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, accountPath(a.ID)+"?done=limits-removed", http.StatusSeeOther)
}

// handleOpsResetUsage resets the account's counters, and records it in the
// audit log (the quota store has no audit of its own).
func (s *Server) handleOpsResetUsage(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") != "yes" {
		s.renderOpsAccount(w, r, http.StatusBadRequest, a, "",
			&page{Errors: map[string]string{"confirm": "Tick the box to confirm the reset."}})
		return
	}
	if err := s.Quota.Reset(r.Context(), sluice.AccountQuotaKey(a.ID)); err != nil {
		s.internalError(w, r, err)
		return
	}
	if s.Audit != nil {
		e := &sluice.AuditEvent{Actor: sluice.ActorFrom(r.Context()), Action: sluice.AuditUsageReset, AccountID: a.ID}
		if err := s.Audit.RecordAudit(r.Context(), e); err != nil {
			s.logger().Warn("console: record usage reset", "account_id", a.ID, "error", err.Error())
		}
	}
	http.Redirect(w, r, accountPath(a.ID)+"?done=usage-reset", http.StatusSeeOther)
}

func (s *Server) handleOpsRevokePage(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	k, err := s.findKey(r.Context(), a.ID, r.PathValue("key"))
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if k == nil {
		s.notFound(w, r)
		return
	}
	s.render(w, r, http.StatusOK, "ops_revoke", &page{Title: "Revoke a key", Ops: true,
		Data: map[string]any{"Key": k, "Account": a,
			"Action": accountPath(a.ID) + "/keys/" + k.ID + "/revoke", "Back": accountPath(a.ID) + "#keys"}})
}

func (s *Server) handleOpsRevoke(w http.ResponseWriter, r *http.Request) {
	a, ok := s.opsAccount(w, r)
	if !ok {
		return
	}
	err := s.Accounts.RevokeAPIKey(r.Context(), a.ID, r.PathValue("key"), s.now())
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		s.notFound(w, r)
		return
	} else if err != nil {
		s.internalError(w, r, err)
		return
	}
	http.Redirect(w, r, accountPath(a.ID)+"?done=key-revoked#keys", http.StatusSeeOther)
}

type opsAudit struct {
	Available bool
	Events    []eventView
	Next      string
	Error     string
}

// handleOpsAudit handles /ops/audit: the audit log, newest first, paged by
// ?before=ID.
func (s *Server) handleOpsAudit(w http.ResponseWriter, r *http.Request) {
	before, ok := parseAfter(r.URL.Query().Get("before"))
	if !ok {
		s.badForm(w, r)
		return
	}
	v := &opsAudit{Available: s.Audit != nil}
	if s.Audit != nil {
		const n = 50
		evs, err := s.Audit.ListAudit(r.Context(), sluice.AuditFilter{Before: before, Limit: n})
		if err != nil {
			s.logger().Warn("console: audit log", "error", err.Error())
			v.Error = "The audit log is not available right now."
		}
		v.Events = s.events(r.Context(), evs, 0, true, true)
		if len(evs) == n {
			v.Next = "/ops/audit?before=" + strconv.FormatInt(evs[n-1].ID, 10)
		}
	}
	s.render(w, r, http.StatusOK, "ops_audit", &page{Title: "Audit log", Ops: true, Data: v})
}
