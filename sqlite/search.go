package sqlite

import (
	"context"
	"fmt"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.AccountSearcher = (*DB)(nil)

// SearchAccounts finds the accounts whose email contains q.Text
// (case-insensitively) or whose ID is q.Text, lowest ID first, in one
// query read by scanAccount, as FindAccountByID reads an account.
func (db *DB) SearchAccounts(ctx context.Context, q sluice.AccountQuery) ([]*sluice.Account, error) {
	text, pattern, id, limit := sluice.SearchTerms(q)
	rows, err := db.r.QueryContext(ctx, `
SELECT `+accountColumns+` FROM accounts
WHERE id > ? AND (? = '' OR email_key LIKE ? ESCAPE '\' OR id = ?)
ORDER BY id LIMIT ?`, q.After, text, pattern, id, limit)
	if err != nil {
		return nil, fmt.Errorf("search accounts: %w", err)
	}
	defer rows.Close()
	var out []*sluice.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, fmt.Errorf("search accounts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search accounts: %w", err)
	}
	return out, nil
}

var _ sluice.SessionEnder = (*DB)(nil)

// DeleteSession ends the session with the token hash.
func (db *DB) DeleteSession(ctx context.Context, tokenHash []byte) error {
	if _, err := db.w.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ?`, tokenHash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
