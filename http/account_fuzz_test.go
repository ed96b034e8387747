package http

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// The fuzz targets of the account endpoints' bodies: decoding and
// validation never panic, every refusal is a §5 error (400 or 413), and
// whatever is accepted keeps the rules of its endpoint.

const fuzzMaxBody = 512

// fuzzDecode decodes body as a handler does, with a fuzzMaxBody limit.
func fuzzDecode(s *Server, body []byte, v any) error {
	r := httptest.NewRequest("POST", "/auth/x", bytes.NewReader(body))
	return s.decodeJSON(httptest.NewRecorder(), r, v)
}

// fuzzAccount runs decode-and-validate on body and checks the refusal or
// the acceptance.
func fuzzAccount(t *testing.T, body []byte, err error, accepted func()) {
	t.Helper()
	if err != nil {
		checkErrorBody(t, err, sluice.EINVALID, sluice.ETOOLARGE)
		if sluice.ErrorCode(err) == sluice.ETOOLARGE && len(body) <= fuzzMaxBody {
			t.Fatalf("413 for a body of %d bytes", len(body))
		}
		return
	}
	if len(body) > fuzzMaxBody {
		t.Fatalf("a body of %d bytes was accepted", len(body))
	}
	if !json.Valid(body) {
		t.Fatalf("invalid JSON %q accepted", body)
	}
	accepted()
}

func seeds(f *testing.F, bodies ...string) {
	for _, b := range append(bodies, ``, `{`, `null`, `[]`, `"x"`, `{} {}`, `{}]`, "{\"email\":\"\xff@example.com\"}",
		`{"email":"a@example.com","password":"`+strings.Repeat("p", 600)+`"}`) {
		f.Add([]byte(b))
	}
}

func FuzzRegisterBody(f *testing.F) {
	seeds(f, `{"email":"ada@example.com","password":"correct horse"}`,
		`{"email":" Ada@Example.com ","password":"12345678"}`,
		`{"email":"Ada <ada@example.com>","password":"12345678"}`,
		`{"email":"a@b","password":"1234567"}`,
		`{"email":"a@example.com","password":"`+strings.Repeat("é", 256)+`"}`,
		`{"email":"a@example.com","password":"`+strings.Repeat("é", 257)+`"}`,
		`{"email":"a@example.com","password":null}`,
		`{"email":7,"password":true}`,
		`{"email":"a@example.com","password":"12345678","plan":"vip"}`)
	s := fuzzServer(f, fuzzMaxBody)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b credentialsBody
		err := fuzzDecode(s, body, &b)
		if err == nil {
			err = b.validateRegister()
		}
		fuzzAccount(t, body, err, func() {
			n := utf8.RuneCountInString(b.Password)
			if !validEmail(b.Email) || len(b.Email) > MaxEmail || b.Email != strings.TrimSpace(b.Email) ||
				n < MinPassword || n > MaxPassword {
				t.Fatalf("invalid registration accepted: %+v", b)
			}
		})
	})
}

func FuzzLoginBody(f *testing.F) {
	seeds(f, `{"email":"ada@example.com","password":"x"}`,
		`{"email":"not an email","password":"x"}`,
		`{"email":"","password":"x"}`,
		`{"email":"a@example.com","password":""}`,
		`{"email":"`+strings.Repeat("a", 300)+`","password":"x"}`,
		`{"email":"a@example.com","password":12345678}`,
		`{"email":"a@example.com","password":"x","remember":true}`)
	s := fuzzServer(f, fuzzMaxBody)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b credentialsBody
		err := fuzzDecode(s, body, &b)
		if err == nil {
			err = b.validateLogin()
		}
		fuzzAccount(t, body, err, func() {
			if b.Email == "" || len(b.Email) > MaxEmail || b.Password == "" || utf8.RuneCountInString(b.Password) > MaxPassword {
				t.Fatalf("invalid login accepted: %+v", b)
			}
		})
	})
}

func FuzzForgotBody(f *testing.F) {
	seeds(f, `{"email":"ada@example.com"}`, `{"email":"ada"}`, `{"email":["ada@example.com"]}`,
		`{"email":"ada@example.com","bcc":"eve@example.com"}`, `{"email":"ada@example.com\r\nBcc: eve@example.com"}`)
	s := fuzzServer(f, fuzzMaxBody)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b forgotBody
		err := fuzzDecode(s, body, &b)
		if err == nil {
			err = b.validate()
		}
		fuzzAccount(t, body, err, func() {
			if !validEmail(b.Email) || strings.ContainsAny(b.Email, "\r\n") {
				t.Fatalf("invalid email accepted: %q", b.Email)
			}
		})
	})
}

func FuzzResetBody(f *testing.F) {
	tok := "slr_" + strings.Repeat("A", 40)
	seeds(f, `{"token":"`+tok+`","password":"correct horse"}`,
		`{"token":"slr_short","password":"correct horse"}`,
		`{"token":"`+tok+`","password":"short"}`,
		`{"token":1,"password":"correct horse"}`,
		`{"password":"correct horse"}`,
		`{"token":"`+tok+`"}`)
	s := fuzzServer(f, fuzzMaxBody)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b resetBody
		err := fuzzDecode(s, body, &b)
		if err == nil {
			err = b.validate()
		}
		fuzzAccount(t, body, err, func() {
			if !validToken(resetPrefix, b.Token) || validPassword(b.Password) != nil {
				t.Fatalf("invalid reset accepted: %+v", b)
			}
		})
	})
}

func FuzzKeysBody(f *testing.F) {
	seeds(f, `{"name":"ci"}`, `{"name":"  "}`, `{"name":7}`, `{"name":"`+strings.Repeat("k", 101)+`"}`,
		`{"name":"ci","scopes":["all"]}`, `{"name":"\u00e9\u2028"}`)
	s := fuzzServer(f, fuzzMaxBody)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b keyBody
		err := fuzzDecode(s, body, &b)
		if err == nil {
			err = b.validate()
		}
		fuzzAccount(t, body, err, func() {
			if b.Name == "" || b.Name != strings.TrimSpace(b.Name) || utf8.RuneCountInString(b.Name) > MaxKeyName {
				t.Fatalf("invalid key name accepted: %q", b.Name)
			}
		})
	})
}

func FuzzAlertsBody(f *testing.F) {
	seeds(f, `{"email":false}`, `{"email":true}`, `{"email":null}`, `{"email":"false"}`, `{"email":0}`, `{}`,
		`{"email":false,"telegram":false}`, `{"EMAIL":true}`)
	s := fuzzServer(f, fuzzMaxBody)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b alertsBody
		err := fuzzDecode(s, body, &b)
		if err == nil {
			err = b.validate()
		}
		fuzzAccount(t, body, err, func() {
			if b.Email == nil {
				t.Fatalf("alerts body without email accepted: %q", body)
			}
		})
	})
}
