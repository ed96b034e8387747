package inmem

import (
	"database/sql"
	"time"
)

// CorruptForTest writes an undecodable state row for key.
func CorruptForTest(path, key string) error {
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec(upsertSQL, key, 0, []byte{0xff, 0xff}, time.Now().Add(time.Hour).Unix())
	return err
}
