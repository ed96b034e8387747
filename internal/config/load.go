package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice"
)

// Error is a problem with one configuration key. Its message never holds
// the value of a secret key.
type Error struct {
	// Field is the dotted path of the key, like "limits.windows.hour" or
	// "plans[2].id"; empty for a problem with the file as a whole.
	Field string
	// Source is where the value came from: "file.yaml:12" or the name of
	// an environment variable; empty for a problem Validate found.
	Source string
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.Source != "" {
		b.WriteString(e.Source + ": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// secretInvalid is the message for a secret key whose value cannot be parsed.
const secretInvalid = "invalid value (not shown: the key is secret)"

// Load returns the configuration: Default, overlaid with the YAML file at
// path unless path is empty, overlaid with the environment, and validated.
//
// In the file, an unknown key is an error, and a key that is absent or null
// keeps its default, except that a null plan limit means unlimited. A list
// (plans, models, server.trusted_proxies) replaces the default list whole.
//
// Every scalar key can be overridden by the environment variable
// SLUICE_<PATH>, the key's dotted path upper-cased with dots turned into
// underscores: SLUICE_SERVER_ADDR, SLUICE_LIMITS_WINDOWS_HOUR,
// SLUICE_REDIS_URL. A variable that getenv returns empty is ignored. Plans
// and models come from the file only; server.trusted_proxies is a
// comma-separated list. getenv is typically os.Getenv; nil means no
// environment.
//
// Errors are *Error, or several joined (errors.Join) when Validate finds
// more than one problem.
func Load(path string, getenv func(string) string) (Config, error) {
	c := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := c.decodeYAML(data, path); err != nil {
			return Config{}, err
		}
	}
	if getenv != nil {
		if err := c.applyEnv(getenv); err != nil {
			return Config{}, err
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// applyEnv overlays the SLUICE_* variables on c.
func (c *Config) applyEnv(getenv func(string) string) error {
	return eachLeaf(reflect.ValueOf(c).Elem(), "", func(path string, v reflect.Value, secret string) error {
		name := envName(path)
		s := getenv(name)
		if s == "" {
			return nil
		}
		if v.Kind() != reflect.String {
			s = strings.TrimSpace(s) // strings, secrets among them, are taken verbatim
		}
		if err := setLeaf(v, s); err != nil {
			msg := err.Error()
			if secret != "" {
				msg = secretInvalid
			}
			return &Error{Field: path, Source: name, Msg: msg}
		}
		return nil
	})
}

// decodeYAML overlays the YAML document data, read from the file name, on c.
//
// It walks the document's node tree itself instead of letting yaml.v3
// decode into Config (with KnownFields): that way the root types need no
// yaml tags, a null plan limit can mean unlimited, values are parsed by the
// same functions as the environment's, and every error names the key's full
// path and line.
func (c *Config) decodeYAML(data []byte, name string) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty, or only comments
		}
		return &Error{Source: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		return &Error{Source: name, Msg: "more than one YAML document"}
	}
	if len(doc.Content) == 0 {
		return nil
	}
	d := decoder{source: name}
	return d.decode(doc.Content[0], reflect.ValueOf(c).Elem(), "", "")
}

type decoder struct {
	source string // the file name
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) error {
	return &Error{Field: path, Source: fmt.Sprintf("%s:%d", d.source, n.Line), Msg: fmt.Sprintf(format, args...)}
}

// limitMissing is the Hour and Day of a plan read from the file before its
// keys are: Validate reports a plan without them.
const limitMissing sluice.Limit = -2

var (
	limitType    = reflect.TypeFor[sluice.Limit]()
	prefixesType = reflect.TypeFor[[]netip.Prefix]()
	intsType     = reflect.TypeFor[Ints]()
	planType     = reflect.TypeFor[sluice.Plan]()
	modelType    = reflect.TypeFor[sluice.Model]()
)

// decode sets v, the key at path, from the node n. A null keeps v as it is
// (the default), except that a null limit is Unlimited.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path, secret string) error {
	n = deref(n)
	if n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		if v.Type() == limitType {
			v.Set(reflect.ValueOf(sluice.Unlimited))
		}
		return nil
	}
	t := v.Type()
	switch {
	case t == prefixesType && n.Kind == yaml.SequenceNode:
		var ps []netip.Prefix
		for i, e := range n.Content {
			e, p := deref(e), fmt.Sprintf("%s[%d]", path, i)
			if e == nil || e.Kind != yaml.ScalarNode {
				return d.fail(n, p, "must be an IP or CIDR")
			}
			x, err := parsePrefix(e.Value)
			if err != nil {
				return d.fail(e, p, "%v", err)
			}
			ps = append(ps, x)
		}
		v.Set(reflect.ValueOf(ps))
	case t == intsType && n.Kind == yaml.SequenceNode:
		xs := Ints{}
		for i, e := range n.Content {
			e, p := deref(e), fmt.Sprintf("%s[%d]", path, i)
			if e == nil || e.Kind != yaml.ScalarNode {
				return d.fail(n, p, "must be a whole number")
			}
			x, err := parseInt(e.Value)
			if err != nil {
				return d.fail(e, p, "%v", err)
			}
			if len(xs) == maxInts {
				return d.fail(e, path, "more than %d numbers", maxInts)
			}
			xs = append(xs, x)
		}
		v.Set(reflect.ValueOf(xs))
	case isLeaf(t):
		if n.Kind != yaml.ScalarNode {
			return d.fail(n, path, "must be a single value, not a %s", kindName(n))
		}
		if err := setLeaf(v, n.Value); err != nil {
			if secret != "" {
				return d.fail(n, path, secretInvalid)
			}
			return d.fail(n, path, "%v", err)
		}
	case t.Kind() == reflect.Struct:
		return d.section(n, v, path)
	case t.Kind() == reflect.Slice:
		return d.list(n, v, path)
	default:
		panic("config: no decoder for " + t.String())
	}
	return nil
}

// section sets the keys of the struct v from the mapping n.
func (d *decoder) section(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.fail(n, path, "must be a mapping of keys, not a %s", kindName(n))
	}
	fs := fieldsOf(v.Type())
	seen := make(map[string]bool, len(fs))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			return d.fail(n.Content[i], path, "keys must be plain names, not a %s", kindName(k))
		}
		p := joinPath(path, k.Value)
		j := slices.IndexFunc(fs, func(f field) bool { return f.name == k.Value })
		if j < 0 {
			return d.fail(k, p, "unknown key; the keys here are %s", keyNames(fs))
		}
		if seen[k.Value] {
			return d.fail(k, p, "key given twice")
		}
		seen[k.Value] = true
		if err := d.decode(n.Content[i+1], v.Field(fs[j].index), p, fs[j].secret); err != nil {
			return err
		}
	}
	return nil
}

// list replaces the slice of structs v with the sequence n.
func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.SequenceNode {
		return d.fail(n, path, "must be a list, not a %s", kindName(n))
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		ev := s.Index(i)
		switch ev.Type() {
		case planType:
			ev.Set(reflect.ValueOf(sluice.Plan{Hour: limitMissing, Day: limitMissing}))
		case modelType:
			ev.Set(reflect.ValueOf(sluice.Model{OwnedBy: "sluice"}))
		}
		if err := d.decode(e, ev, fmt.Sprintf("%s[%d]", path, i), ""); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// deref follows an alias to its anchored node.
func deref(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch {
	case n == nil:
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "mapping"
	case n.Kind == yaml.SequenceNode:
		return "list"
	case n.Kind == yaml.ScalarNode:
		return "single value"
	}
	return "YAML node"
}

func keyNames(fs []field) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}
