package http

import (
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// Live is the part of a Server's configuration that Reload changes while
// it serves: the plans, the models, the quota windows (not their algorithm)
// and the auth endpoints' limits.
type Live struct {
	Plans      []sluice.Plan
	Models     []sluice.Model
	Limits     Limits
	AuthLimits AuthLimits
}

// live is one immutable snapshot of a Live, prepared for lookups. The
// Server holds the current one in an atomic pointer; serveHTTP loads it once
// per request into the request's state, so that a request sees one
// configuration from its first check to its answer, whatever reload happens
// meanwhile.
type live struct {
	plans     map[string]*sluice.Plan
	planList  []sluice.Plan
	models    map[string]*sluice.Model
	modelList []sluice.Model
	limits    Limits
	// apiPlans names the plans with API access, for the 403 message.
	apiPlans string
}

// newLive prepares l, filling in the defaults of Limits. It copies the
// slices: the caller may reuse them.
func newLive(l Live) *live {
	c := &live{limits: l.Limits}
	if c.limits.Hour <= 0 {
		c.limits.Hour = time.Hour
	}
	if c.limits.Day <= 0 {
		c.limits.Day = 24 * time.Hour
	}
	if c.limits.MaxN <= 0 {
		c.limits.MaxN = DefaultMaxN
	}
	c.planList = append([]sluice.Plan(nil), l.Plans...)
	c.plans = make(map[string]*sluice.Plan, len(c.planList))
	var api []string
	for i := range c.planList {
		p := &c.planList[i]
		c.plans[p.ID] = p
		if p.API {
			api = append(api, p.Name)
		}
	}
	c.apiPlans = strings.Join(api, ", ")
	c.modelList = append([]sluice.Model(nil), l.Models...)
	c.models = make(map[string]*sluice.Model, len(c.modelList))
	for i := range c.modelList {
		c.models[c.modelList[i].ID] = &c.modelList[i]
	}
	return c
}

// Reload makes l the Server's configuration for the requests that start
// after it returns; requests in flight finish under the one they started
// with. The algorithm of l.Limits must be the running one: counters kept
// under one algorithm are not read under another (cmd refuses such a
// reload). The auth limits change one by one, each atomically; an auth
// request reads only its own. Reload is safe for concurrent use with
// requests, not with another Reload.
func (s *Server) Reload(l Live) {
	s.init()
	s.cur.Store(newLive(l))
	s.auth.login.set(l.AuthLimits.Login)
	s.auth.register.set(l.AuthLimits.Register)
	s.auth.forgot.set(l.AuthLimits.ForgotPassword)
	s.auth.forgotEmail.set(l.AuthLimits.ForgotPasswordEmail)
}

// cfg returns the configuration of r: the snapshot its request loaded, or
// the current one for a request that did not pass through Handler.
func (s *Server) cfg(r *http.Request) *live {
	if st := stateOf(r); st != nil && st.cfg != nil {
		return st.cfg
	}
	return s.cur.Load()
}

// ReloadReport is the answer of POST /admin/reload: what changed, and the
// changed keys that take effect only after a restart.
type ReloadReport struct {
	Status          string   `json:"status"` // "reloaded"
	Changed         []string `json:"changed"`
	RestartRequired []string `json:"restart_required"`
}

// handleReload handles POST /admin/reload: Reloader re-reads the
// configuration. A configuration that fails validation is a 400 naming the
// field (the running one stays); without a Reloader the route is 404.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if s.Reloader == nil {
		s.notFound(w, r)
		return
	}
	rep, err := s.Reloader(r.Context())
	if err != nil {
		s.Error(w, r, err)
		return
	}
	if rep.Changed == nil {
		rep.Changed = []string{}
	}
	if rep.RestartRequired == nil {
		rep.RestartRequired = []string{}
	}
	s.writeJSON(w, r, http.StatusOK, rep)
}
