package web

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice"
)

// eventView is an audit event as a sentence.
type eventView struct {
	ID        int64
	At        time.Time
	Text      string // what happened
	Who       string // by whom
	IP        string
	AccountID int64
	Email     string // of the account, on the operator's audit log
}

// events describes evs. self is the account whose page shows them: on its
// own page (forOps false) its user is "you", on the operator's "the
// user"; withEmail looks up each account's email.
func (s *Server) events(ctx context.Context, evs []*sluice.AuditEvent, self int64, forOps, withEmail bool) []eventView {
	out := make([]eventView, 0, len(evs))
	emails := map[int64]string{}
	for _, e := range evs {
		v := eventView{ID: e.ID, At: e.At, Text: describe(e), Who: who(e.Actor, self, forOps), IP: e.Actor.IP, AccountID: e.AccountID}
		if withEmail && e.AccountID != 0 {
			em, ok := emails[e.AccountID]
			if !ok {
				if a, err := s.Accounts.FindAccountByID(ctx, e.AccountID); err == nil {
					em = a.Email
				}
				emails[e.AccountID] = em
			}
			v.Email = em
		}
		out = append(out, v)
	}
	return out
}

func who(a sluice.Actor, self int64, forOps bool) string {
	switch a.Type {
	case sluice.ActorAdmin:
		return "the operator"
	case sluice.ActorUser:
		if self != 0 && a.ID == strconv.FormatInt(self, 10) {
			if forOps {
				return "the user"
			}
			return "you"
		}
		if a.ID == "" {
			return "a user"
		}
		return "user " + a.ID
	case sluice.ActorTelegram:
		return "Telegram user " + a.ID
	}
	return "sluice"
}

// describe says what an event did, in words.
func describe(e *sluice.AuditEvent) string {
	d := func(k string) string {
		if v, ok := e.Details[k]; ok && v != nil {
			return detail(v)
		}
		return ""
	}
	switch e.Action {
	case sluice.AuditAccountCreated:
		return "Account created"
	case sluice.AuditPlanChanged:
		return fmt.Sprintf("Plan changed from %s to %s", d("from"), d("to"))
	case sluice.AuditLimitsChanged:
		return "Limit override set to " + d("to")
	case sluice.AuditLimitsRemoved:
		return "Limit override removed"
	case sluice.AuditKeyCreated:
		return fmt.Sprintf("API key “%s” created", d("name"))
	case sluice.AuditKeyRevoked:
		return fmt.Sprintf("API key “%s” revoked", d("name"))
	case sluice.AuditUsageReset:
		return "Usage counters reset"
	case sluice.AuditPasswordReset:
		return "Password reset"
	case sluice.AuditTelegramLinked:
		return "Telegram account linked"
	case sluice.AuditAlertsChanged:
		return "Mail alerts changed"
	}
	return e.Action
}

// detail writes a detail value: a string as it is, a limits object as
// "hour H, day D", anything else in Go's default format.
func detail(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		return "hour " + limitDetail(x["hour"]) + ", day " + limitDetail(x["day"])
	}
	return fmt.Sprint(v)
}

func limitDetail(v any) string {
	if v == nil {
		return "unlimited"
	}
	return fmt.Sprint(v)
}
