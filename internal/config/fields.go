package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/sluicehq/sluice"
	"github.com/sluicehq/sluice/quota"
)

// The decoder, the environment overlay and Redacted all walk Config by
// reflection: a struct is a section of keys, a type in leaves is a value
// parsed from text, and a slice of structs (plans, models) is a list that
// only the file can set.

// leaves parse the text of every scalar type a Config holds. The same text
// is accepted in the file and in the environment.
var leaves = map[reflect.Type]func(string) (reflect.Value, error){
	reflect.TypeFor[string]():           leaf(func(s string) (string, error) { return s, nil }),
	reflect.TypeFor[int]():              leaf(parseInt),
	reflect.TypeFor[bool]():             leaf(parseBool),
	reflect.TypeFor[time.Duration]():    leaf(ParseDuration),
	reflect.TypeFor[Size]():             leaf(ParseSize),
	reflect.TypeFor[Rate]():             leaf(ParseRate),
	reflect.TypeFor[sluice.Limit]():     leaf(parseLimit),
	reflect.TypeFor[sluice.Algorithm](): leaf(quota.ParseAlgorithm),
	reflect.TypeFor[slog.Level]():       leaf(parseLevel),
	reflect.TypeFor[*time.Location]():   leaf(parseLocation),
	reflect.TypeFor[[]netip.Prefix]():   leaf(parsePrefixes),
	reflect.TypeFor[Ints]():             leaf(ParseInts),
}

func leaf[T any](parse func(string) (T, error)) func(string) (reflect.Value, error) {
	return func(s string) (reflect.Value, error) {
		x, err := parse(s)
		return reflect.ValueOf(&x).Elem(), err
	}
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid number %q", s)
	}
	return n, nil
}

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("invalid boolean %q: use true or false", s)
	}
	return b, nil
}

func isLeaf(t reflect.Type) bool { _, ok := leaves[t]; return ok }

// setLeaf parses s into v, whose type is in leaves.
func setLeaf(v reflect.Value, s string) error {
	x, err := leaves[v.Type()](s)
	if err != nil {
		return err
	}
	v.Set(x)
	return nil
}

// A field is a key of a section.
type field struct {
	name   string // the YAML key: the yaml tag, or the Go name in snake_case
	index  int
	secret string // "" (not secret), "url" (credentials inside) or "true"
}

func fieldsOf(t reflect.Type) []field {
	var fs []field
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = snakeCase(sf.Name)
		}
		fs = append(fs, field{name: name, index: i, secret: sf.Tag.Get("secret")})
	}
	return fs
}

// snakeCase is how the keys of the root types, which have no yaml tags,
// are spelled: ID is id, OwnedBy is owned_by, APIKey is api_key.
func snakeCase(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) &&
			(unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// envName is the environment variable that overrides the key at path:
// limits.windows.hour is SLUICE_LIMITS_WINDOWS_HOUR.
func envName(path string) string {
	return "SLUICE_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// eachLeaf calls fn for every scalar key under the section v, in order,
// skipping lists, and joins the errors fn returns.
func eachLeaf(v reflect.Value, path string, fn func(path string, v reflect.Value, secret string) error) error {
	var errs []error
	for _, f := range fieldsOf(v.Type()) {
		fv, p := v.Field(f.index), joinPath(path, f.name)
		switch {
		case isLeaf(fv.Type()):
			errs = append(errs, fn(p, fv, f.secret))
		case fv.Kind() == reflect.Struct:
			errs = append(errs, eachLeaf(fv, p, fn))
		}
	}
	return errors.Join(errs...)
}

// redacted replaces a secret in Redacted.
const redacted = "REDACTED"

// Redacted returns c with every secret blanked, for logging the effective
// configuration: tokens, passwords and API keys become "REDACTED"; URLs keep
// their scheme, host and path but lose their credentials (user info, and
// query parameters named like a password, secret, token or key). c's lists
// are shared, not copied.
func (c Config) Redacted() Config {
	eachLeaf(reflect.ValueOf(&c).Elem(), "", func(_ string, v reflect.Value, secret string) error {
		switch {
		case secret == "" || v.String() == "":
		case secret == "url":
			v.SetString(redactURL(v.String()))
		default:
			v.SetString(redacted)
		}
		return nil
	})
	return c
}

// redactURL returns s without its credentials, or "REDACTED" if s is not
// a URL that can be taken apart safely.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return redacted
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redacted)
		} else {
			u.User = url.User(redacted)
		}
	}
	if u.RawQuery != "" {
		params := strings.Split(u.RawQuery, "&")
		for i, p := range params {
			k, _, _ := strings.Cut(p, "=")
			if isSecretParam(k) {
				params[i] = k + "=" + redacted
			}
		}
		u.RawQuery = strings.Join(params, "&")
	}
	if u.Fragment != "" {
		u.Fragment, u.RawFragment = redacted, ""
	}
	return u.String()
}

// isSecretParam reports whether the query parameter named k (still
// escaped) may hold a credential.
func isSecretParam(k string) bool {
	k, err := url.QueryUnescape(k)
	if err != nil {
		return true
	}
	k = strings.ToLower(k)
	for _, w := range []string{"pass", "secret", "token", "key", "auth", "sig", "cred"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}
