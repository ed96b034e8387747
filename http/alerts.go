package http

import (
	"net/http"

	"github.com/sluicehq/sluice"
)

// recordDecision hands the decision d on n units of model for q to Usage,
// if set: the usage history and the quota alerts watch every decision of
// the image endpoint. It does not block (UsageRecorder's contract).
func (s *Server) recordDecision(q *quotaCtx, model string, n int64, d *sluice.Decision) {
	if s.Usage == nil {
		return
	}
	e := sluice.UsageEvent{
		AccountID: q.account.ID, Plan: q.plan.ID, KeyID: q.keyID, Channel: sluice.ChannelAPI,
		Model: model, Time: d.Time, Outcome: sluice.UsageAdmitted, Units: n, Decision: d,
	}
	switch {
	case !d.Allowed:
		e.Outcome = sluice.UsageRejected
	case d.Shadow:
		e.Outcome = sluice.UsageShadow
	}
	if e.Outcome != sluice.UsageAdmitted && d.Blocking >= 0 && d.Blocking < d.N {
		e.Window = d.Windows[d.Blocking].Name
	}
	s.Usage.Record(&e)
}

// alertsBody is the body of PUT /v1/alerts.
type alertsBody struct {
	Email *bool `json:"email"`
}

func (b *alertsBody) validate() error {
	if b.Email == nil {
		return sluice.FieldError("email", "email is required: true to get quota alerts by mail, false to stop them.")
	}
	return nil
}

// alertsJSON is the account's alert settings, as GET and PUT /v1/alerts
// answer them.
type alertsJSON struct {
	Email bool `json:"email"`
}

// handleGetAlerts handles GET /v1/alerts: the session's account's alert
// settings.
func (s *Server) handleGetAlerts(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, false)
	if !ok {
		return
	}
	s.peekHeaders(w, r, q)
	s.writeJSON(w, r, http.StatusOK, &alertsJSON{Email: !q.account.MailAlertsOff})
}

// handlePutAlerts handles PUT /v1/alerts {"email":false}: turns the quota
// alerts by mail of the session's account on or off, and answers the
// settings.
func (s *Server) handlePutAlerts(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, false)
	if !ok {
		return
	}
	var b alertsBody
	if err := s.decodeValid(w, r, &b, b.validate); err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	if err := s.Accounts.SetMailAlerts(r.Context(), q.account.ID, *b.Email); err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	s.writeJSON(w, r, http.StatusOK, &alertsJSON{Email: *b.Email})
}
