package sqlite

import (
	"context"
	"fmt"

	sluice "github.com/sluicehq/sluice"
)

var _ sluice.AccountSearcher = (*DB)(nil)

// SearchAccounts finds the accounts whose email contains q.Text
// (case-insensitively) or whose ID is q.Text, lowest ID first. It selects
// the IDs, then reads each account as FindAccountByID does, so that an
// account looks the same whichever way it was found: at most
// sluice.MaxAccountSearchLimit lookups, for the operator's pages only.
func (db *DB) SearchAccounts(ctx context.Context, q sluice.AccountQuery) ([]*sluice.Account, error) {
	text, pattern, id, limit := sluice.SearchTerms(q)
	rows, err := db.r.QueryContext(ctx, `
SELECT id FROM accounts
WHERE id > ? AND (? = '' OR email_key LIKE ? ESCAPE '\' OR id = ?)
ORDER BY id LIMIT ?`, q.After, text, pattern, id, limit)
	if err != nil {
		return nil, fmt.Errorf("search accounts: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("search accounts: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("search accounts: %w", err)
	}
	out := make([]*sluice.Account, 0, len(ids))
	for _, id := range ids {
		a, err := db.FindAccountByID(ctx, id)
		if sluice.ErrorCode(err) == sluice.ENOTFOUND {
			continue // deleted in between
		} else if err != nil {
			return nil, fmt.Errorf("search accounts: %w", err)
		}
		out = append(out, a)
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
