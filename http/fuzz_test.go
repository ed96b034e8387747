package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// fuzzServer is a Server whose decoders the fuzz targets call directly.
func fuzzServer(tb testing.TB, maxBody int64) *Server {
	s := &Server{Plans: sluice.DefaultPlans(), Models: sluice.DefaultModels(), MaxBody: maxBody}
	s.init()
	tb.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// checkErrorBody checks that err is a §5 error of one of the codes, and
// that both of its body shapes are JSON with the fields they must have.
func checkErrorBody(t *testing.T, err error, codes ...string) {
	t.Helper()
	var e *sluice.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not a *sluice.Error", err)
	}
	ok := false
	for _, c := range codes {
		ok = ok || e.Code == c
	}
	if !ok || e.Message == "" {
		t.Fatalf("error %+v: want one of the codes %v and a message", e, codes)
	}
	ae := toAPIError(err)
	status := ErrorStatusCode(ae.Code)
	if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d for %+v", status, e)
	}
	var flat map[string]any
	body := appendErrorBody(nil, ae, false, status)
	if err := json.Unmarshal(body, &flat); err != nil {
		t.Fatalf("flat body %q: %v", body, err)
	}
	if flat["error"] != e.Code || utf8.ValidString(e.Message) && flat["message"] != e.Message {
		t.Fatalf("flat body %s for %+v", body, e)
	}
	for k := range flat {
		if k != "error" && k != "message" && k != "field" {
			t.Fatalf("flat body %s has the field %q", body, k)
		}
	}
	var oa struct {
		Error struct {
			Message, Type, Code string
			Param               *string
		}
	}
	body = appendErrorBody(nil, ae, true, status)
	if err := json.Unmarshal(body, &oa); err != nil || oa.Error.Code != e.Code || oa.Error.Type != "invalid_request_error" {
		t.Fatalf("OpenAI body %s: %v", body, err)
	}
	if (oa.Error.Param == nil) != (e.Field == "") {
		t.Fatalf("OpenAI body %s: param for field %q", body, e.Field)
	}
}

func FuzzDecodeImageRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"sluice-sketch","prompt":"a fox"}`,
		`{"model":"sluice-sketch","prompt":"a fox","n":4,"size":"1024x1024","response_format":"b64_json"}`,
		`{"model":"m","prompt":"p","n":0}`,
		`{"model":"m","prompt":"p","n":"2"}`,
		`{"model":"m","prompt":"p","size":"0064x64"}`,
		`{"model":"m","prompt":"p","size":"64x"}`,
		`{"model":"m","prompt":"p","response_format":"url"}`,
		`{"model":"m","prompt":"p","quality":"hd","style":"vivid","user":"u","output_compression":101}`,
		`{"model":"m","prompt":"p"} {}`,
		`{"model":"m","prompt":"p","extra":1}`,
		`[1,2]`, `null`, `"x"`, ``, `{`, "{\"prompt\":\"\xff\"}",
		`{"model":"m","prompt":"` + strings.Repeat("x", 300) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	s := fuzzServer(f, 256)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/v1/images/generations", bytes.NewReader(body))
		w := httptest.NewRecorder()
		req, err := s.readImageRequest(w, r)
		if err != nil {
			checkErrorBody(t, err, sluice.EINVALID, sluice.ETOOLARGE)
			if sluice.ErrorCode(err) == sluice.ETOOLARGE && len(body) <= 256 {
				t.Fatalf("413 for a body of %d bytes", len(body))
			}
			return
		}
		if len(body) > 256 {
			t.Fatalf("a body of %d bytes was decoded", len(body))
		}
		if req.Model == "" || strings.TrimSpace(req.Prompt) == "" || utf8.RuneCountInString(req.Prompt) > MaxPrompt ||
			req.N < 1 || req.N > s.cur.Load().limits.MaxN || req.ResponseFormat != "b64_json" {
			t.Fatalf("invalid request admitted: %+v", req)
		}
		if size, ok := parseSize(req.Size); !ok || size != req.Size {
			t.Fatalf("size %q admitted", req.Size)
		}
		if !json.Valid(body) {
			t.Fatalf("invalid JSON %q admitted", body)
		}
	})
}

func FuzzAdminBodies(f *testing.F) {
	for _, seed := range []struct {
		kind uint8
		body string
	}{
		{0, `{"email":"a@example.com","password":"12345678","plan":"vip"}`},
		{0, `{"email":"Ada <a@example.com>"}`},
		{0, `{"email":"a@example.com","password":null}`},
		{0, `{"email":"a@b","password":"short"}`},
		{1, `{"plan":"vip"}`},
		{1, `{"plan":""}`},
		{2, `{"hour":5,"day":null}`},
		{2, `{"hour":-1,"day":1e3}`},
		{2, `{"hour":5}`},
		{2, `{"hour":"5","day":[1]}`},
		{3, `{"name":"ci"}`},
		{3, `{"name":"  "}`},
		{3, `{"name":7}`},
	} {
		f.Add(seed.kind, []byte(seed.body))
	}
	s := fuzzServer(f, 512)
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/admin/accounts", bytes.NewReader(body))
		var err error
		switch kind % 4 {
		case 0:
			var b accountBody
			if err = s.decodeJSON(w, r, &b); err == nil {
				if err = b.validate(s.cur.Load().plans); err == nil {
					if !validEmail(b.Email) || s.cur.Load().plans[b.Plan] == nil || b.Password != nil && validPassword(*b.Password) != nil {
						t.Fatalf("invalid account admitted: %+v", b)
					}
				}
			}
		case 1:
			var b planBody
			if err = s.decodeJSON(w, r, &b); err == nil {
				if err = b.validate(s.cur.Load().plans); err == nil && s.cur.Load().plans[b.Plan] == nil {
					t.Fatalf("unknown plan %q admitted", b.Plan)
				}
			}
		case 2:
			var b limitsBody
			if err = s.decodeJSON(w, r, &b); err == nil {
				var o *sluice.LimitOverride
				if o, err = b.override(); err == nil {
					for _, l := range []sluice.Limit{o.Hour, o.Day} {
						if l != sluice.Unlimited && (l < 0 || l > MaxOverride) {
							t.Fatalf("limit %d admitted from %s", l, body)
						}
					}
				}
			}
		case 3:
			var b keyBody
			if err = s.decodeJSON(w, r, &b); err == nil {
				if err = b.validate(); err == nil && (b.Name == "" || utf8.RuneCountInString(b.Name) > MaxKeyName) {
					t.Fatalf("key name %q admitted", b.Name)
				}
			}
		}
		if err != nil {
			checkErrorBody(t, err, sluice.EINVALID, sluice.ETOOLARGE)
		}
	})
}

func FuzzParseBearer(f *testing.F) {
	for _, seed := range []string{
		"Bearer slk_abc", "bearer x", "BEARER  x  ", "Bearer", "Bearer ", "Basic abc", "Bearer a b",
		"Bearer \x00", "Bearer é", "Bearer " + strings.Repeat("k", 600), "Bearerx",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, h string) {
		tok, ok := parseBearer(h)
		if !ok {
			if tok != "" {
				t.Fatalf("parseBearer(%q) = %q, false", h, tok)
			}
			return
		}
		if tok == "" || len(tok) > maxBearer || !strings.EqualFold(h[:7], "Bearer ") || !strings.Contains(h, tok) {
			t.Fatalf("parseBearer(%q) = %q", h, tok)
		}
		for i := 0; i < len(tok); i++ {
			if tok[i] <= ' ' || tok[i] >= 0x7f {
				t.Fatalf("parseBearer(%q) = %q, with byte %#x", h, tok, tok[i])
			}
		}
		if again, ok := parseBearer("Bearer " + tok); !ok || again != tok {
			t.Fatalf("round trip of %q gave %q, %v", tok, again, ok)
		}
	})
}

// FuzzJSONString checks the error bodies' string encoder against
// encoding/json: the same string comes back.
func FuzzJSONString(f *testing.F) {
	for _, seed := range []string{"", "plain", `quo"te\`, "<b>&", "\x00\x1f\n\t", "\xff\xfe", "\u2028\u2029", "é漢字🙂"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(enc, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: %v", s, enc, err)
		}
		ref, _ := json.Marshal(s)
		var want string
		json.Unmarshal(ref, &want)
		if got != want {
			t.Fatalf("appendJSONString(%q) decodes to %q, encoding/json's to %q", s, got, want)
		}
	})
}
