package http

import (
	"context"
	"encoding/json"
	"net/http"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// Bounds of admin and account requests.
const (
	MinPassword = 8   // characters
	MaxPassword = 256 // characters
	MaxKeyName  = 100 // characters
	MaxEmail    = 254 // bytes
	// MaxOverride bounds a per-account limit. It keeps every algorithm's
	// arithmetic exact for windows up to a day (the token bucket's bound
	// is the tightest, about 5·10⁷ units a day).
	MaxOverride = 10_000_000
)

type accountBody struct {
	Email    string  `json:"email"`
	Password *string `json:"password"`
	Plan     string  `json:"plan"`
}

// validate checks a POST /admin/accounts body and fills in the default plan.
func (b *accountBody) validate(plans map[string]*sluice.Plan) error {
	if b.Email == "" {
		return sluice.FieldError("email", "email is required.")
	}
	if !validEmail(b.Email) {
		return sluice.FieldError("email", "email must be an email address like name@example.com.")
	}
	if b.Plan == "" {
		b.Plan = sluice.DefaultPlan
	}
	if plans[b.Plan] == nil {
		return unknownPlan(b.Plan)
	}
	if b.Password != nil {
		if err := validPassword(*b.Password); err != nil {
			return err
		}
	}
	return nil
}

func unknownPlan(id string) error {
	return sluice.FieldError("plan", "Unknown plan %q; GET /admin/plans lists the plans.", shorten(id))
}

// validEmail reports whether s is a bare address (no display name, no
// surrounding space) that net/mail accepts.
func validEmail(s string) bool {
	if len(s) > MaxEmail {
		return false
	}
	a, err := mail.ParseAddress(s)
	return err == nil && a.Name == "" && a.Address == s && strings.Count(s, "@") == 1
}

// validPassword checks a new password: MinPassword to MaxPassword
// characters. The upper bound is checked before anything is hashed.
func validPassword(pw string) error {
	n := utf8.RuneCountInString(pw)
	if n < MinPassword {
		return sluice.FieldError("password", "password must be at least %d characters.", MinPassword)
	}
	if n > MaxPassword {
		return sluice.FieldError("password", "password must be at most %d characters.", MaxPassword)
	}
	return nil
}

type createdAccountJSON struct {
	UserID int64  `json:"user_id"`
	Email  string `json:"email"`
	Plan   string `json:"plan"`
}

// handleCreateAccount handles POST /admin/accounts.
func (s *Server) handleCreateAccount(w http.ResponseWriter, r *http.Request) {
	var b accountBody
	if err := s.decodeValid(w, r, &b, func() error { return b.validate(s.cfg(r).plans) }); err != nil {
		s.Error(w, r, err)
		return
	}
	a := &sluice.Account{Email: b.Email, Plan: b.Plan}
	if b.Password != nil {
		h, err := HashPassword(*b.Password)
		if err != nil {
			s.Error(w, r, err)
			return
		}
		a.PasswordHash = h
	}
	if err := s.Accounts.CreateAccount(r.Context(), a); err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusCreated, &createdAccountJSON{UserID: a.ID, Email: a.Email, Plan: a.Plan})
}

type overrideJSON struct {
	Hour *int64 `json:"hour"` // null: unlimited
	Day  *int64 `json:"day"`
}

type accountJSON struct {
	UserID     int64         `json:"user_id"`
	Email      *string       `json:"email"`
	Plan       string        `json:"plan"`
	Override   *overrideJSON `json:"override"`
	TelegramID *int64        `json:"telegram_id"`
	CreatedAt  string        `json:"created_at"` // RFC 3339, UTC
	Usage      *usageJSON    `json:"usage"`
}

func limitPtr(l sluice.Limit) *int64 {
	if l.IsUnlimited() {
		return nil
	}
	v := int64(l)
	return &v
}

// accountID parses the {id} of an admin route. Anything that is not a
// positive integer names no account.
func accountID(r *http.Request) (int64, error) {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, sluice.Errorf(sluice.ENOTFOUND, "No account has the ID %q.", shorten(v))
	}
	return id, nil
}

// findAccount looks up the account of an admin route.
func (s *Server) findAccount(r *http.Request) (*sluice.Account, error) {
	id, err := accountID(r)
	if err != nil {
		return nil, err
	}
	a, err := s.Accounts.FindAccountByID(r.Context(), id)
	if sluice.ErrorCode(err) == sluice.ENOTFOUND {
		return nil, sluice.Errorf(sluice.ENOTFOUND, "No account has the ID %d.", id)
	}
	return a, err
}

// writeAccount answers with the account and its usage, read afresh.
func (s *Server) writeAccount(w http.ResponseWriter, r *http.Request, id int64) {
	a, err := s.Accounts.FindAccountByID(r.Context(), id)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	q, err := s.quotaFor(r, a)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	d, err := s.peek(r.Context(), q)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	out := &accountJSON{
		UserID:    a.ID,
		Plan:      a.Plan,
		CreatedAt: a.CreatedAt.UTC().Format(time.RFC3339),
		Usage:     usageOf(q.plan.ID, &d),
	}
	if a.Email != "" {
		out.Email = &a.Email
	}
	if a.Override != nil {
		out.Override = &overrideJSON{Hour: limitPtr(a.Override.Hour), Day: limitPtr(a.Override.Day)}
	}
	if a.TelegramID != 0 {
		out.TelegramID = &a.TelegramID
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// handleGetAccount handles GET /admin/accounts/{id}.
func (s *Server) handleGetAccount(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeAccount(w, r, a.ID)
}

type planBody struct {
	Plan string `json:"plan"`
}

func (b *planBody) validate(plans map[string]*sluice.Plan) error {
	if b.Plan == "" {
		return sluice.FieldError("plan", "plan is required.")
	}
	if plans[b.Plan] == nil {
		return unknownPlan(b.Plan)
	}
	return nil
}

// handleSetPlan handles PUT /admin/accounts/{id}/plan. The next request of
// the account sees the new plan: accounts are read per request.
func (s *Server) handleSetPlan(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	var b planBody
	if err := s.decodeValid(w, r, &b, func() error { return b.validate(s.cfg(r).plans) }); err != nil {
		s.Error(w, r, err)
		return
	}
	if err := s.Accounts.SetPlan(r.Context(), a.ID, b.Plan); err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeAccount(w, r, a.ID)
}

// limitsBody is the body of PUT /admin/accounts/{id}/limits. Both fields are
// required; null means no limit. json.RawMessage tells a missing field (nil)
// from null ("null").
type limitsBody struct {
	Hour json.RawMessage `json:"hour"`
	Day  json.RawMessage `json:"day"`
}

func (b *limitsBody) override() (*sluice.LimitOverride, error) {
	hour, err := parseLimit("hour", b.Hour)
	if err != nil {
		return nil, err
	}
	day, err := parseLimit("day", b.Day)
	if err != nil {
		return nil, err
	}
	return &sluice.LimitOverride{Hour: hour, Day: day}, nil
}

func parseLimit(field string, raw json.RawMessage) (sluice.Limit, error) {
	if raw == nil {
		return 0, sluice.FieldError(field, "%s is required: a number of images, or null for no limit.", field)
	}
	if string(raw) == "null" {
		return sluice.Unlimited, nil
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil || v < 0 || v > MaxOverride {
		return 0, sluice.FieldError(field, "%s must be a whole number from 0 to %d, or null for no limit.", field, MaxOverride)
	}
	return sluice.Limit(v), nil
}

// handleSetLimits handles PUT /admin/accounts/{id}/limits.
func (s *Server) handleSetLimits(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	var b limitsBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		s.Error(w, r, err)
		return
	}
	o, err := b.override()
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if err := s.Accounts.SetOverride(r.Context(), a.ID, o); err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeAccount(w, r, a.ID)
}

// handleDeleteLimits handles DELETE /admin/accounts/{id}/limits: the plan's
// limits apply again. It answers 200 with the account.
func (s *Server) handleDeleteLimits(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if err := s.Accounts.SetOverride(r.Context(), a.ID, nil); err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeAccount(w, r, a.ID)
}

type keyBody struct {
	Name string `json:"name"`
}

func (b *keyBody) validate() error {
	b.Name = strings.TrimSpace(b.Name)
	if b.Name == "" {
		return sluice.FieldError("name", "name is required.")
	}
	if utf8.RuneCountInString(b.Name) > MaxKeyName {
		return sluice.FieldError("name", "name must be at most %d characters.", MaxKeyName)
	}
	return nil
}

type createdKeyJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Key       string `json:"key"`
	CreatedAt string `json:"created_at"`
}

// handleCreateKey handles POST /admin/accounts/{id}/keys. The key itself is
// in this answer only; the store keeps its hash.
func (s *Server) handleCreateKey(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	var b keyBody
	if err := s.decodeValid(w, r, &b, func() error { return b.validate() }); err != nil {
		s.Error(w, r, err)
		return
	}
	k, key, err := s.createAPIKey(r.Context(), a.ID, b.Name)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeCreatedKey(w, r, k, key)
}

// createAPIKey stores a new API key named name for the account and returns
// it with the key itself, which only the creator's answer shows.
func (s *Server) createAPIKey(ctx context.Context, accountID int64, name string) (*sluice.APIKey, string, error) {
	key, id, hash := sluice.NewAPIKey()
	k := &sluice.APIKey{ID: id, AccountID: accountID, Name: name, Hash: hash}
	if err := s.Accounts.CreateAPIKey(ctx, k); err != nil {
		return nil, "", err
	}
	return k, key, nil
}

// writeCreatedKey answers 201 with a new key, not to be cached.
func (s *Server) writeCreatedKey(w http.ResponseWriter, r *http.Request, k *sluice.APIKey, key string) {
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusCreated, &createdKeyJSON{ID: k.ID, Name: k.Name, Key: key,
		CreatedAt: k.CreatedAt.UTC().Format(time.RFC3339)})
}

// handleResetUsage handles DELETE /admin/accounts/{id}/usage: the account's
// counters start afresh.
func (s *Server) handleResetUsage(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if err := s.resetUsage(r.Context(), sluice.AccountQuotaKey(a.ID)); err != nil {
		s.Error(w, r, err)
		return
	}
	s.recordAudit(r.Context(), sluice.AuditUsageReset, a.ID)
	w.WriteHeader(http.StatusNoContent)
}

type planJSON struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Hour   *int64 `json:"hour"` // null: unlimited
	Day    *int64 `json:"day"`
	Models string `json:"models"`
	API    bool   `json:"api"`
}

// handlePlans handles GET /admin/plans: {"plans":[…]}, in configuration order.
func (s *Server) handlePlans(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Plans []planJSON `json:"plans"`
	}{}
	plans := s.cfg(r).planList
	out.Plans = make([]planJSON, 0, len(plans))
	for _, p := range plans {
		out.Plans = append(out.Plans, planJSON{ID: p.ID, Name: p.Name, Hour: limitPtr(p.Hour), Day: limitPtr(p.Day),
			Models: p.Models, API: p.API})
	}
	s.writeJSON(w, r, http.StatusOK, &out)
}

// handleAdminListKeys handles GET /admin/accounts/{id}/keys: the account's
// live keys, as GET /v1/keys shows them to their owner.
func (s *Server) handleAdminListKeys(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	out, err := s.keyList(r.Context(), a.ID)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// handleAdminRevokeKey handles DELETE /admin/accounts/{id}/keys/{key}: 204,
// and the key is refused from its next use on, as with DELETE /v1/keys/{id}
// — for an operator who must stop a leaked key without its owner's session.
func (s *Server) handleAdminRevokeKey(w http.ResponseWriter, r *http.Request) {
	a, err := s.findAccount(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	id := r.PathValue("key")
	if err := s.Accounts.RevokeAPIKey(r.Context(), a.ID, id, s.now()); sluice.ErrorCode(err) == sluice.ENOTFOUND {
		s.Error(w, r, sluice.Errorf(sluice.ENOTFOUND, "Account %d has no live API key with the ID %q.", a.ID, shorten(id)))
		return
	} else if err != nil {
		s.Error(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
