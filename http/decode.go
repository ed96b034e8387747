package http

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// decodeJSON decodes the request body, one JSON object of at most MaxBody
// bytes with no fields that v lacks, into v. Its errors are *sluice.Error:
// ETOOLARGE for a body over the limit, EINVALID naming the field at fault
// where one is.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeBody(http.MaxBytesReader(w, r.Body, s.maxBody), v)
}

// decodeValid decodes the body into v, as decodeJSON does, then checks it
// with validate.
func (s *Server) decodeValid(w http.ResponseWriter, r *http.Request, v any, validate func() error) error {
	if err := s.decodeJSON(w, r, v); err != nil {
		return err
	}
	return validate()
}

func decodeBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	// Anything but white space after the object is an error.
	if _, err := dec.Token(); err != io.EOF {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return decodeError(err)
		}
		return &sluice.Error{Code: sluice.EINVALID, Message: "The request body must hold a single JSON object and nothing after it."}
	}
	return nil
}

// decodeError turns an error of encoding/json into a *sluice.Error that says
// what is wrong in words a client can act on.
func decodeError(err error) error {
	var (
		maxErr  *http.MaxBytesError
		synErr  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return &sluice.Error{Code: sluice.ETOOLARGE,
			Message: "The request body is larger than " + strconv.FormatInt(maxErr.Limit, 10) + " bytes."}
	case errors.Is(err, io.EOF):
		return &sluice.Error{Code: sluice.EINVALID, Message: "The request body is empty; send a JSON object."}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &sluice.Error{Code: sluice.EINVALID, Message: "The request body is not valid JSON: it ends too soon."}
	case errors.As(err, &synErr):
		return &sluice.Error{Code: sluice.EINVALID,
			Message: "The request body is not valid JSON (at byte " + strconv.FormatInt(synErr.Offset, 10) + ")."}
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return &sluice.Error{Code: sluice.EINVALID, Message: "The request body must be a JSON object."}
		}
		f := shorten(typeErr.Field)
		return sluice.FieldError(f, "%s must be %s.", f, kindOf(typeErr.Type))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, uerr := strconv.Unquote(name); uerr == nil {
			name = n
		}
		f := shorten(name)
		return sluice.FieldError(f, "Unknown field %q.", f)
	}
	return &sluice.Error{Code: sluice.EINVALID, Message: "The request body is not valid JSON."}
}

// kindOf names the JSON kind a Go type is decoded from.
func kindOf(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "of another type"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "of another type"
}

// shorten cuts a client-supplied name that is echoed back to at most 64
// bytes, on a character boundary.
func shorten(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
