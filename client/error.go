package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice"
)

// Error is an error answer of the gateway (CONTRACT.md §5), or, with Status
// 0, a request the client did not send because its quota view shows that it
// would be refused and the caller did not let it wait (WithMaxWait, or a
// context deadline before the window's reset).
//
// It unwraps to a *sluice.Error with the same code and message, so that
// sluice.ErrorCode(err) works on it.
type Error struct {
	// Status is the HTTP status of the answer; 0 if no request was sent.
	Status int
	// Code is the §5 error code, like "rate_limit_exceeded".
	Code    string
	Message string
	// RetryAfter is how long to wait before the same request can
	// succeed: the Retry-After of a 429 or 503 (else its retry_after), or,
	// for a request not sent, the time until the window's reset. 0 if the
	// answer did not say.
	RetryAfter time.Duration
	// Extra fields of some codes.
	Field     string // invalid_request: the field at fault
	Plan      string // rate_limit_exceeded, api_access_not_included, model_not_allowed
	Model     string // model_not_allowed
	LimitHour *int64 // rate_limit_exceeded; nil when unlimited or not sent
	LimitDay  *int64
	// Window names the exhausted window of a request not sent ("hour",
	// "day", ...), and Remaining what the server last said is left in it.
	Window    string
	Remaining int64
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("sluice client: %s (not sent): %s", e.Code, e.Message)
	}
	s := fmt.Sprintf("sluice: %d %s: %s", e.Status, e.Code, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// Unwrap returns the error as a *sluice.Error.
func (e *Error) Unwrap() error {
	return &sluice.Error{Code: e.Code, Message: e.Message, Field: e.Field}
}

// IsRateLimited reports whether err is (or wraps) a rate_limit_exceeded
// *Error: a 429, or a request not sent because the quota is spent.
func IsRateLimited(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == sluice.ERATELIMIT
}

// quotaError is the error of a request not sent because of d, whose window
// resets in wait.
func quotaError(d decision, wait time.Duration) *Error {
	return &Error{
		Code:       sluice.ERATELIMIT,
		Message:    fmt.Sprintf("The %s quota has %d units left; it next grows at %s.", d.exhausted, d.left, d.reset.Format(time.TimeOnly)),
		RetryAfter: max(wait, 0),
		Window:     d.exhausted,
		Remaining:  d.left,
	}
}

// errorBody is an error body, flat (/v1/) or in OpenAI's shape
// (/openai/v1/): {"error":{"message","type","code","param",…}}.
type errorBody struct {
	Error      json.RawMessage `json:"error"`
	Message    string          `json:"message"`
	Field      string          `json:"field"`
	RetryAfter int64           `json:"retry_after"`
	Plan       string          `json:"plan"`
	Model      string          `json:"model"`
	LimitHour  *int64          `json:"limit_hour"`
	LimitDay   *int64          `json:"limit_day"`
}

type openAIErrorBody struct {
	Message    string  `json:"message"`
	Code       string  `json:"code"`
	Param      *string `json:"param"`
	RetryAfter int64   `json:"retry_after"`
	Plan       string  `json:"plan"`
	Model      string  `json:"model"`
	LimitHour  *int64  `json:"limit_hour"`
	LimitDay   *int64  `json:"limit_day"`
}

// parseError builds the *Error of a non-2xx answer from its body. A body
// that is not a §5 error (a proxy's page, say) gives a code from the status.
func parseError(status int, body []byte) *Error {
	e := &Error{Status: status}
	var b errorBody
	if json.Unmarshal(body, &b) == nil && len(b.Error) > 0 {
		var code string
		var o openAIErrorBody
		switch {
		case json.Unmarshal(b.Error, &code) == nil:
			e.Code, e.Message, e.Field, e.Plan, e.Model = code, b.Message, b.Field, b.Plan, b.Model
			e.RetryAfter = time.Duration(min(max(b.RetryAfter, 0), maxSeconds)) * time.Second
			e.LimitHour, e.LimitDay = b.LimitHour, b.LimitDay
		case json.Unmarshal(b.Error, &o) == nil:
			e.Code, e.Message, e.Plan, e.Model = o.Code, o.Message, o.Plan, o.Model
			if o.Param != nil {
				e.Field = *o.Param
			}
			e.RetryAfter = time.Duration(min(max(o.RetryAfter, 0), maxSeconds)) * time.Second
			e.LimitHour, e.LimitDay = o.LimitHour, o.LimitDay
		}
	}
	if e.Code == "" {
		e.Code = codeOfStatus(status)
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("The server answered %d without a sluice error body.", status)
	}
	return e
}

// codeOfStatus is the §5 code that most likely goes with a status.
func codeOfStatus(status int) string {
	switch status {
	case 400:
		return sluice.EINVALID
	case 401:
		return sluice.EINVALIDKEY
	case 404:
		return sluice.ENOTFOUND
	case 413:
		return sluice.ETOOLARGE
	case 429:
		return sluice.ERATELIMIT
	case 502:
		return sluice.EUPSTREAM
	case 503:
		return sluice.EUNAVAILABLE
	}
	return sluice.EINTERNAL
}
