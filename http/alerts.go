package http

import (
	"net/http"

	"github.com/sluicehq/sluice"
)

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
