package http_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
	sluicehttp "github.com/sluicehq/sluice/http"
)

// TestAlertsSetting: GET and PUT /v1/alerts read and set the account's mail
// alerts, with a session token only.
func TestAlertsSetting(t *testing.T) {
	h := newHarness(t, noAuthLimits)
	id := h.register("ada@example.com", "correct horse battery")
	session := h.login("ada@example.com", "correct horse battery")
	for i, st := range []struct {
		method, body string
		status       int
		want         string
		stored       bool // MailAlertsOff after the step
	}{
		{"GET", "", http.StatusOK, `{"email":true}`, false},
		{"PUT", `{"email":false}`, http.StatusOK, `{"email":false}`, true},
		{"GET", "", http.StatusOK, `{"email":false}`, true},
		{"PUT", `{"email":false}`, http.StatusOK, `{"email":false}`, true},
		{"PUT", `{}`, http.StatusBadRequest, `"field":"email"`, true},
		{"PUT", `{"email":"yes"}`, http.StatusBadRequest, `"field":"email"`, true},
		{"PUT", `{"email":true,"sms":true}`, http.StatusBadRequest, `"field":"sms"`, true},
		{"PUT", `{"email":true}`, http.StatusOK, `{"email":true}`, false},
	} {
		res := h.do(st.method, "/v1/alerts", session, st.body)
		if res.Status != st.status || !strings.Contains(body(res), st.want) {
			t.Errorf("step %d: %s /v1/alerts %s = %d %s, want %d with %s", i, st.method, st.body, res.Status, res.Body, st.status, st.want)
		}
		if res.Header.Get("X-RateLimit-Limit-Hour") == "" {
			t.Errorf("step %d: no rate-limit headers", i)
		}
		a, err := h.DB.FindAccountByID(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if a.MailAlertsOff != st.stored {
			t.Errorf("step %d: MailAlertsOff = %v, want %v", i, a.MailAlertsOff, st.stored)
		}
	}
	_, key := h.account("vip")
	wantStatus(t, h.do("PUT", "/v1/alerts", key, `{"email":false}`), http.StatusUnauthorized)
	wantStatus(t, h.do("GET", "/v1/alerts", "", ""), http.StatusUnauthorized)
}

// recorder keeps a copy of every event it is handed.
type recorder struct {
	mu     sync.Mutex
	events []sluice.UsageEvent
}

func (r *recorder) Record(e *sluice.UsageEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := *e
	if c.Decision != nil {
		d := *c.Decision
		c.Decision = &d
	}
	r.events = append(r.events, c)
}

// TestUsageRecorded: every decision of the image endpoint reaches Usage,
// with its decision.
func TestUsageRecorded(t *testing.T) {
	rec := &recorder{}
	h := newHarness(t, withServer(func(s *sluicehttp.Server) { s.Usage = rec }))
	id, key := h.account("tiny") // 2 per hour
	for range 3 {
		h.do("POST", "/v1/images/generations", key, `{"model":"sluice-sketch","prompt":"a fox"}`)
	}
	type got struct {
		Outcome   sluice.UsageOutcome
		Units     int64
		Window    string
		Remaining int64
	}
	var gots []got
	for _, e := range rec.events {
		if e.AccountID != id || e.Plan != "tiny" || e.Channel != sluice.ChannelAPI || e.KeyID == "" || e.Model != "sluice-sketch" || e.Decision == nil {
			t.Errorf("event %+v", e)
			continue
		}
		gots = append(gots, got{e.Outcome, e.Units, e.Window, e.Decision.Windows[0].Remaining})
	}
	want := []got{{sluice.UsageAdmitted, 1, "", 1}, {sluice.UsageAdmitted, 1, "", 0}, {sluice.UsageRejected, 1, "hour", 0}}
	if diff := cmp.Diff(want, gots); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
