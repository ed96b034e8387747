package web

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice"
)

// page is what every template gets: the layout's fields and the page's own
// Data.
type page struct {
	Title string
	CSRF  string
	User  *sluice.Account // signed-in user, for the navigation
	Ops   bool            // an operator page
	OpsIn bool            // the operator is signed in (set by render)
	// Notice is a message about what just happened ("Key revoked.").
	Notice string
	// Error is a message about the whole form; Errors the messages of
	// single fields, shown next to them.
	Error  string
	Errors map[string]string
	// Form are the values to show again in a form that failed.
	Form map[string]string
	Data any
}

var pageNames = []string{
	"signup", "login", "forgot", "reset", "account", "revoke", "message",
	"ops_login", "ops_home", "ops_account", "ops_audit", "ops_revoke",
}

var funcs = template.FuncMap{
	"asset":      assetURL,
	"utc":        formatUTC,
	"iso":        func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"limit":      formatLimit,
	"num":        formatNum,
	"planName":   func(p *sluice.Plan) string { return p.Name },
	"modelsText": modelsText,
	"orNever": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return formatUTC(t)
	},
}

func parsePages() map[string]*template.Template {
	m := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		m[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS,
			"templates/layout.html", "templates/partials.html", "templates/"+name+".html"))
	}
	return m
}

// render writes the page with the status. It renders into a buffer first,
// so that a template error is a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	if p.CSRF == "" {
		p.CSRF = s.csrfToken(w, r)
	}
	if p.Ops {
		p.OpsIn = s.opsSignedIn(r)
	}
	var b bytes.Buffer
	if err := s.pages[name].Execute(&b, p); err != nil {
		s.logger().Error("console: render", "page", name, "error", err.Error())
		http.Error(w, "Internal error.", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// message renders a page that only says something, with the status.
func (s *Server) message(w http.ResponseWriter, r *http.Request, status int, title, text string) {
	s.render(w, r, status, "message", &page{Title: title, Data: text, Ops: strings.HasPrefix(r.URL.Path, "/ops/")})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) {
		writeJSONError(w, http.StatusNotFound, sluice.ENOTFOUND, "There is no such page.")
		return
	}
	s.message(w, r, http.StatusNotFound, "Not found", "There is no such page.")
}

func (s *Server) badForm(w http.ResponseWriter, r *http.Request) {
	if wantsJSON(r) {
		writeJSONError(w, http.StatusBadRequest, sluice.EINVALID, "The form could not be read.")
		return
	}
	s.message(w, r, http.StatusBadRequest, "Bad form", "The form could not be read. Go back, reload the page and try again.")
}

// csrfFailed answers a POST without a valid CSRF token: 403 csrf_failed.
func (s *Server) csrfFailed(w http.ResponseWriter, r *http.Request) {
	const msg = "The form's security token is missing or out of date; reload the page and send the form again."
	if wantsJSON(r) {
		writeJSONError(w, http.StatusForbidden, sluice.ECSRF, msg)
		return
	}
	s.message(w, r, http.StatusForbidden, "Form expired", msg)
}

// internalError answers an error that the user cannot act on; it is
// logged, its text never shown.
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.logger().Error("console: internal error", "path", r.URL.Path, "error", err.Error())
	if wantsJSON(r) {
		writeJSONError(w, http.StatusInternalServerError, sluice.EINTERNAL, "Internal error.")
		return
	}
	s.message(w, r, http.StatusInternalServerError, "Something went wrong",
		"Something went wrong on our side. Try again in a moment.")
}

func formatUTC(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func formatLimit(l sluice.Limit) string {
	if l.IsUnlimited() {
		return "unlimited"
	}
	return formatNum(int64(l))
}

// formatNum writes n with thousands separators: 1,000.
func formatNum(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func modelsText(p *sluice.Plan) string {
	if p.Models == sluice.ModelsAll {
		return "all"
	}
	return "starter"
}

// retryText says in words when a refused attempt may be made again.
func retryText(secs int64, now time.Time) string {
	at := now.Add(time.Duration(secs) * time.Second).UTC().Format("15:04:05 UTC")
	switch {
	case secs <= 1:
		return "Try again in a second."
	case secs < 60:
		return "Try again in " + strconv.FormatInt(secs, 10) + " seconds (at " + at + ")."
	case secs < 3600:
		m := (secs + 59) / 60
		unit := " minutes"
		if m == 1 {
			unit = " minute"
		}
		return "Try again in " + strconv.FormatInt(m, 10) + unit + " (at " + at + ")."
	}
	h := (secs + 3599) / 3600
	unit := " hours"
	if h == 1 {
		unit = " hour"
	}
	return "Try again in " + strconv.FormatInt(h, 10) + unit + " (at " + at + ")."
}
