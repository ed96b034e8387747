package mail

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/sluicehq/sluice"
)

// Outbox is the Transport of a deployment without a mail server: every
// message is written to the log (Info, body included, so that a developer
// can copy a reset token from the terminal) and to a file of its own in Dir,
// named after the time it was written so that the names sort in order
// ("20260301T101500.123456789Z-1a2b3c4d.eml", an RFC 5322 message, mode
// 0600). A file appears whole or not at all: it is written under a
// temporary name and renamed.
//
// Outbox is meant for development and single-user setups: the log and the
// directory hold secrets (reset tokens) in the clear. It is safe for
// concurrent use.
type Outbox struct {
	Dir    string
	From   string       // sender; empty means DefaultFrom
	Logger *slog.Logger // nil: slog.Default()
	// Now dates messages and names files; nil means time.Now.
	Now func() time.Time
}

var _ Transport = (*Outbox)(nil)

// Deliver writes m to the log and to a new file in Dir, creating Dir
// (mode 0700) if needed.
func (o *Outbox) Deliver(ctx context.Context, m *sluice.Email) error {
	fromText := o.From
	if fromText == "" {
		fromText = DefaultFrom
	}
	from, err := parseFrom(fromText)
	if err != nil {
		return Permanent(fmt.Errorf("outbox: %w", err))
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	msg, err := format(from, m, now)
	if err != nil {
		return Permanent(fmt.Errorf("outbox: %w", err))
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	name := now.UTC().Format("20060102T150405.000000000Z") + "-" + randomHex(4) + ".eml"
	path := filepath.Join(o.Dir, name)
	if err := writeFile(path, msg); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log.LogAttrs(ctx, slog.LevelInfo, "mail written to the outbox (no SMTP server configured)",
		slog.String("to", m.To), slog.String("subject", m.Subject), slog.String("file", path),
		slog.String("text", m.Text))
	return nil
}

// writeFile writes b to path through a temporary file in the same
// directory, so that readers never see part of it.
func writeFile(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
