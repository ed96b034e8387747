package sluice

import (
	"errors"
	"fmt"
)

// Error codes, as they appear in the "error" field of every JSON error body
// (CONTRACT.md §5). Only the http package maps them to statuses.
const (
	EINVALID         = "invalid_request"
	EINVALIDKEY      = "invalid_api_key"
	EUNAUTHORIZED    = "unauthorized"
	EINVALIDCREDS    = "invalid_credentials"
	ENOAPIACCESS     = "api_access_not_included"
	EMODELNOTALLOWED = "model_not_allowed"
	EMODELNOTFOUND   = "model_not_found"
	ENOTFOUND        = "not_found"
	EEMAILTAKEN      = "email_taken"
	ETELEGRAMTAKEN   = "telegram_taken" // a Telegram user bound to another account
	ETOOLARGE        = "payload_too_large"
	ERATELIMIT       = "rate_limit_exceeded"
	ECSRF            = "csrf_failed"
	EUPSTREAM        = "upstream_error"
	EUNAVAILABLE     = "quota_unavailable"
	EINTERNAL        = "internal_error"
)

// Error codes of idempotent requests (CONTRACT.md §9).
const (
	// EIDEMINFLIGHT: a request with the same Idempotency-Key is still
	// being served (409, Retry-After: 1).
	EIDEMINFLIGHT = "idempotency_in_progress"
	// EIDEMREUSED: the Idempotency-Key was used with a different request,
	// or its answer cannot be replayed (422).
	EIDEMREUSED = "idempotency_key_reused"
)

// Error is an error that sluice shows to its users: a code from the list
// above and a one-sentence message for a human. Field names the request
// field at fault, if one is; RetryAfter says when a refused request may be
// sent again. Errors that are not *Error are internal: their
// text is logged and never shown.
type Error struct {
	Code    string
	Message string
	Field   string
	// RetryAfter is, on an ERATELIMIT, the whole seconds (at least 1)
	// after which the same request would be admitted; 0 otherwise.
	RetryAfter int64
}

func (e *Error) Error() string {
	return fmt.Sprintf("sluice error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldError returns an EINVALID error that names the field at fault.
func FieldError(field, format string, args ...any) *Error {
	return &Error{Code: EINVALID, Message: fmt.Sprintf(format, args...), Field: field}
}

// ErrorCode returns the code of err if it is (or wraps) an *Error, the empty
// string for a nil error, and EINTERNAL otherwise.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the human message of err if it is (or wraps) an
// *Error, and a generic message otherwise, so that internal details never
// reach a client.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error."
}
