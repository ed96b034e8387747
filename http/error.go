package http

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// codes maps every sluice error code to its HTTP status. It is the only place
// where codes meet statuses (CONTRACT.md §5).
var codes = map[string]int{
	sluice.EINVALID:         http.StatusBadRequest,
	sluice.EINVALIDKEY:      http.StatusUnauthorized,
	sluice.EUNAUTHORIZED:    http.StatusUnauthorized,
	sluice.EINVALIDCREDS:    http.StatusUnauthorized,
	sluice.ENOAPIACCESS:     http.StatusForbidden,
	sluice.EMODELNOTALLOWED: http.StatusForbidden,
	sluice.EMODELNOTFOUND:   http.StatusNotFound,
	sluice.ENOTFOUND:        http.StatusNotFound,
	sluice.EEMAILTAKEN:      http.StatusConflict,
	sluice.ETELEGRAMTAKEN:   http.StatusConflict,
	sluice.ETOOLARGE:        http.StatusRequestEntityTooLarge,
	sluice.ERATELIMIT:       http.StatusTooManyRequests,
	sluice.ECSRF:            http.StatusForbidden,
	sluice.EUPSTREAM:        http.StatusBadGateway,
	sluice.EUNAVAILABLE:     http.StatusServiceUnavailable,
	sluice.EINTERNAL:        http.StatusInternalServerError,
	sluice.EIDEMINFLIGHT:    http.StatusConflict,
	sluice.EIDEMREUSED:      http.StatusUnprocessableEntity,
	codeMethodNotAllowed:    http.StatusMethodNotAllowed,
}

// codeMethodNotAllowed is the code of a 405. It is not a sluice error code
// because no domain operation fails with it: only the router does.
const codeMethodNotAllowed = "method_not_allowed"

// ErrorStatusCode returns the HTTP status of a sluice error code; unknown
// codes are 500.
func ErrorStatusCode(code string) int {
	if v, ok := codes[code]; ok {
		return v
	}
	return http.StatusInternalServerError
}

// apiError is an error body of CONTRACT.md §5: a code, a message and the
// extra fields that the code carries. Zero extra fields are left out, except
// that a plan quota 429 (planLimits set) always sends limit_hour and
// limit_day, null when unlimited.
type apiError struct {
	Code    string
	Message string
	Field   string // "field"; "param" in the OpenAI shape
	Plan    string
	Model   string
	// RetryAfter, when positive, is sent as "retry_after" and as the
	// Retry-After header.
	RetryAfter int64
	planLimits bool
	LimitHour  sluice.Limit
	LimitDay   sluice.Limit
}

// toAPIError converts err to the body that a client is shown. Errors that
// are not *sluice.Error are internal: the client gets a generic message.
func toAPIError(err error) *apiError {
	var e *sluice.Error
	if errors.As(err, &e) && e.Code != "" {
		return &apiError{Code: e.Code, Message: e.Message, Field: e.Field, RetryAfter: e.RetryAfter}
	}
	return &apiError{Code: sluice.EINTERNAL, Message: sluice.ErrorMessage(err)}
}

// Error writes err as a JSON error body in the shape of the request's
// family (flat under /v1/, OpenAI's under /openai/). Internal errors are
// logged with the request id; their text never reaches the client.
func (s *Server) Error(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(err)
	if e.Code == sluice.EINTERNAL {
		s.logger().LogAttrs(r.Context(), slog.LevelError, "internal error",
			slog.String("request_id", requestID(r)),
			slog.String("method", r.Method),
			slog.String("route", routeOf(r)),
			slog.String("error", err.Error()))
	}
	s.writeError(w, r, e)
}

// writeError writes e with the status of its code.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *apiError) {
	status := ErrorStatusCode(e.Code)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(e.RetryAfter, 10))
	} else if e.Code == sluice.EUNAVAILABLE || e.Code == sluice.EIDEMINFLIGHT {
		h.Set("Retry-After", "1")
	}
	if st := stateOf(r); st != nil {
		st.errCode = e.Code
	}
	w.WriteHeader(status)
	b := appendErrorBody(make([]byte, 0, 256), e, isOpenAI(r), status)
	w.Write(append(b, '\n'))
}

// appendErrorBody appends the JSON body of e: flat,
//
//	{"error":"<code>","message":"…",<extras>}
//
// or, for the OpenAI-compatible routes,
//
//	{"error":{"message":"…","type":"…","code":"<code>","param":"<field>"|null,<extras>}}
//
// where the extras (plan, model, retry_after, limit_hour, limit_day) keep
// their names. The order of the fields is fixed: the public page shows the
// flat 429 body byte for byte.
func appendErrorBody(b []byte, e *apiError, openai bool, status int) []byte {
	if openai {
		b = append(b, `{"error":{"message":`...)
		b = appendJSONString(b, e.Message)
		b = append(b, `,"type":`...)
		b = appendJSONString(b, openAIType(status))
		b = append(b, `,"code":`...)
		b = appendJSONString(b, e.Code)
		b = append(b, `,"param":`...)
		if e.Field != "" {
			b = appendJSONString(b, e.Field)
		} else {
			b = append(b, "null"...)
		}
	} else {
		b = append(b, `{"error":`...)
		b = appendJSONString(b, e.Code)
		b = append(b, `,"message":`...)
		b = appendJSONString(b, e.Message)
		if e.Field != "" {
			b = append(b, `,"field":`...)
			b = appendJSONString(b, e.Field)
		}
	}
	if e.RetryAfter > 0 {
		b = append(b, `,"retry_after":`...)
		b = strconv.AppendInt(b, e.RetryAfter, 10)
	}
	if e.Plan != "" {
		b = append(b, `,"plan":`...)
		b = appendJSONString(b, e.Plan)
	}
	if e.Model != "" {
		b = append(b, `,"model":`...)
		b = appendJSONString(b, e.Model)
	}
	if e.planLimits {
		b = append(b, `,"limit_hour":`...)
		b = appendLimit(b, e.LimitHour)
		b = append(b, `,"limit_day":`...)
		b = appendLimit(b, e.LimitDay)
	}
	if openai {
		b = append(b, '}')
	}
	return append(b, '}')
}

// openAIType is the "type" of an OpenAI-shaped error with the status.
func openAIType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status == http.StatusForbidden:
		return "permission_error"
	case status >= 500:
		return "api_error"
	}
	return "invalid_request_error"
}

// appendLimit appends l as a JSON number, or null when unlimited.
func appendLimit(b []byte, l sluice.Limit) []byte {
	if l.IsUnlimited() {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, int64(l), 10)
}

// appendJSONString appends s as a JSON string. Unlike encoding/json it does
// not escape <, > and &: these bodies are read by API clients and people,
// never embedded in HTML. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
