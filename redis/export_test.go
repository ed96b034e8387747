package redis

import "github.com/redis/rueidis"

// WithScript makes s run the quota script src instead of this build's: the
// rolling-upgrade test runs an older gateway's script beside the new one.
func WithScript(s *Store, src string) *Store {
	s.lua = rueidis.NewLuaScript(src)
	return s
}
