package http

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicehq/sluice"
)

// The audit log (CONTRACT.md §10): who changed what.
//
// Actors: the admin wrapper puts Actor{admin, IP} in the request's
// context, and user wraps the routes where a user changes their own
// account (register, reset-password, their keys) with Actor{user, IP}: the
// account store gives it the ID of the account it changes (see
// sluice.NewAuditEvent), which is the session's account, or the account
// just registered or reset. The IP is clientIP's. Other routes carry no
// actor, so that the hot path pays nothing for it.
//
// The store writes the event of each change it makes in the change's
// transaction. Two events come from here, after the change: usage.reset
// (the counters live in the quota store) and password.reset (SetPassword
// is also the rehash at login, which is no event). If writing one fails,
// the change stands, the answer says it was made, and the lost event is
// logged as an error.
//
// Without Server.Audit, GET /admin/audit and GET /v1/audit answer 404
// not_found (after authentication): an empty list would say that nothing
// happened. The events of the store are written all the same.

// actorIP is the client address of r as an actor's IP: empty when unknown.
func (s *Server) actorIP(r *http.Request) string {
	if a := s.clientIP(r); a.IsValid() {
		return a.String()
	}
	return ""
}

// user wraps the handler of a route where a user changes their own account:
// the changes are made by Actor{user, IP}.
func (s *Server) user(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a := sluice.Actor{Type: sluice.ActorUser, IP: s.actorIP(r)}
		h(w, r.WithContext(sluice.WithActor(r.Context(), a)))
	}
}

// recordAudit writes the event of a change made here (not by the account
// store), by the actor of ctx. The change is made: a failure is logged,
// never answered.
func (s *Server) recordAudit(ctx context.Context, action string, accountID int64) {
	if s.Audit == nil {
		return
	}
	// The change is made: record it even if the client hangs up.
	ctx = context.WithoutCancel(ctx)
	e := sluice.NewAuditEvent(ctx, action, accountID, nil)
	if err := s.Audit.RecordAudit(ctx, e); err != nil {
		var id string // of the request, when the change came through one
		if st, _ := ctx.Value(stateKey{}).(*reqState); st != nil {
			id = st.id
		}
		s.logger().LogAttrs(ctx, slog.LevelError, "audit event lost",
			slog.String("request_id", id), slog.String("action", action),
			slog.Int64("account_id", accountID), slog.String("error", err.Error()))
	}
}

var errNoAudit = sluice.Errorf(sluice.ENOTFOUND, "There is no audit log on this server.")

// parseAuditQuery reads the query of GET /admin/audit (account, limit,
// before) or, without withAccount, of GET /v1/audit (limit, before; an
// account parameter is ignored like any unknown one). Each is a positive
// whole number given at most once; an empty one is as if absent; limit is
// at most sluice.MaxAuditLimit. A refusal names the parameter.
func parseAuditQuery(raw string, withAccount bool) (sluice.AuditFilter, error) {
	var f sluice.AuditFilter
	q, err := url.ParseQuery(raw)
	if err != nil {
		return f, sluice.Errorf(sluice.EINVALID, "The query string is not valid URL encoding.")
	}
	param := func(name string, most int64, hint string) (int64, error) {
		vs := q[name]
		if len(vs) > 1 {
			return 0, sluice.FieldError(name, "%s is given more than once.", name)
		}
		if len(vs) == 0 || vs[0] == "" {
			return 0, nil
		}
		v := vs[0]
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 || n > most || v[0] < '0' || v[0] > '9' {
			return 0, sluice.FieldError(name, "%s must be %s, not %q.", name, hint, shorten(v))
		}
		return n, nil
	}
	if withAccount {
		if f.AccountID, err = param("account", 1<<63-1, "an account ID"); err != nil {
			return f, err
		}
	}
	limit, err := param("limit", sluice.MaxAuditLimit, "a whole number from 1 to "+strconv.Itoa(sluice.MaxAuditLimit))
	if err != nil {
		return f, err
	}
	f.Limit = int(limit)
	if f.Before, err = param("before", 1<<63-1, "an event ID (the id of the last event of the page before)"); err != nil {
		return f, err
	}
	return f, nil
}

type auditActorJSON struct {
	Type string  `json:"type"`
	ID   *string `json:"id"` // null for the admin and the system
}

type auditEventJSON struct {
	ID        int64          `json:"id"`
	At        string         `json:"at"` // RFC 3339, UTC
	Actor     auditActorJSON `json:"actor"`
	IP        *string        `json:"ip"` // null when unknown or none (the bot, the system)
	Action    string         `json:"action"`
	AccountID int64          `json:"account_id"`
	Details   map[string]any `json:"details"` // {} for none
}

type auditListJSON struct {
	Events []auditEventJSON `json:"events"`
}

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func auditList(es []*sluice.AuditEvent) *auditListJSON {
	out := &auditListJSON{Events: make([]auditEventJSON, 0, len(es))}
	for _, e := range es {
		d := e.Details
		if d == nil {
			d = map[string]any{}
		}
		out.Events = append(out.Events, auditEventJSON{
			ID:        e.ID,
			At:        e.At.UTC().Format(time.RFC3339),
			Actor:     auditActorJSON{Type: e.Actor.Type, ID: orNull(e.Actor.ID)},
			IP:        orNull(e.Actor.IP),
			Action:    e.Action,
			AccountID: e.AccountID,
			Details:   d,
		})
	}
	return out
}

// handleAdminAudit handles GET /admin/audit?account=ID&limit=N&before=ID:
// the events of one account (of every account without account), newest
// first. An account that does not exist has no events: the log outlives
// accounts.
func (s *Server) handleAdminAudit(w http.ResponseWriter, r *http.Request) {
	if s.Audit == nil {
		s.Error(w, r, errNoAudit)
		return
	}
	f, err := parseAuditQuery(r.URL.RawQuery, true)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	es, err := s.Audit.ListAudit(r.Context(), f)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, auditList(es))
}

// handleOwnAudit handles GET /v1/audit?limit=N&before=ID: the events of the
// session's account, newest first, with its X-RateLimit-* fields.
func (s *Server) handleOwnAudit(w http.ResponseWriter, r *http.Request) {
	q, ok := s.sessionAccount(w, r, false)
	if !ok {
		return
	}
	if s.Audit == nil {
		s.failWithUsage(w, r, q, errNoAudit)
		return
	}
	f, err := parseAuditQuery(r.URL.RawQuery, false)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	f.AccountID = q.account.ID
	es, err := s.Audit.ListAudit(r.Context(), f)
	if err != nil {
		s.failWithUsage(w, r, q, err)
		return
	}
	s.peekHeaders(w, r, q)
	s.writeJSON(w, r, http.StatusOK, auditList(es))
}
