package http

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/sluicehq/sluice"
)

// writeJSON writes v as the JSON body of a response with the status,
// followed by a newline. Like the error bodies it leaves <, > and &
// unescaped.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.Error(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type modelJSON struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Created   int64  `json:"created"`
	OwnedBy   string `json:"owned_by"`
	Tier      string `json:"tier"`
	Available bool   `json:"available"`
}

type modelListJSON struct {
	Object string      `json:"object"`
	Data   []modelJSON `json:"data"`
}

// handleModels handles GET /v1/models: the OpenAI-style list of the models,
// each marked available if the account's plan may use it. Like every API
// call it needs a key whose plan includes API access (403 otherwise).
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	q, ok := s.apiAccount(w, r)
	if !ok {
		return
	}
	models := s.cfg(r).modelList
	list := modelListJSON{Object: "list", Data: make([]modelJSON, 0, len(models))}
	for i := range models {
		m := &models[i]
		owner := m.OwnedBy
		if owner == "" {
			owner = "sluice"
		}
		list.Data = append(list.Data, modelJSON{ID: m.ID, Object: "model", OwnedBy: owner, Tier: m.Tier,
			Available: q.plan.AllowsModel(m)})
	}
	s.peekHeaders(w, r, q)
	s.writeJSON(w, r, http.StatusOK, &list)
}

// windowJSON is one window of a usage report; Limit, Remaining and Reset
// are null for a window without a limit, whose Used still counts. Used may
// exceed Limit after a limit was lowered below what had been used.
type windowJSON struct {
	Limit     *int64 `json:"limit"`
	Used      int64  `json:"used"`
	Remaining *int64 `json:"remaining"`
	Reset     *int64 `json:"reset"` // Unix seconds
}

type usageJSON struct {
	Plan string     `json:"plan"`
	Hour windowJSON `json:"hour"`
	Day  windowJSON `json:"day"`
}

func usageOf(plan string, d *sluice.Decision) *usageJSON {
	u := &usageJSON{Plan: plan}
	for i, w := range d.Statuses() {
		var out *windowJSON
		switch i {
		case hourWindow:
			out = &u.Hour
		case dayWindow:
			out = &u.Day
		default:
			continue
		}
		if w.Limit.IsUnlimited() {
			*out = windowJSON{Used: w.Used()} // CONTRACT.md §6: used still counts
			continue
		}
		limit, remaining, reset := int64(w.Limit), max(w.Remaining, 0), w.Reset.Unix()
		*out = windowJSON{Limit: &limit, Used: w.Used(), Remaining: &remaining, Reset: &reset}
	}
	return u
}

// handleUsage handles GET /v1/usage: where the account stands, consuming
// nothing. It takes an API key (whose plan must include API access) or a
// session token (any plan).
func (s *Server) handleUsage(w http.ResponseWriter, r *http.Request) {
	p, err := s.authKeyOrSession(r)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	q, ok := s.resolveAccount(w, r, p, p.key != nil)
	if !ok {
		return
	}
	d, err := s.peek(r.Context(), q)
	if err != nil {
		s.Error(w, r, err)
		return
	}
	setRateHeaders(w.Header(), &d)
	s.writeJSON(w, r, http.StatusOK, usageOf(q.plan.ID, &d))
}
