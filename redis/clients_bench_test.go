package redis_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/sluicehq/sluice/internal/testenv"
)

// BenchmarkClients compares Redis clients on the store's workload with 64
// callers: the quota script's EVALSHA (the arguments Store.Take sends for a
// two-window sliding policy at the server's clock) and the INCR+EXPIRE
// baseline, through go-redis (one connection per call in flight), go-redis's
// AutoPipeliner and rueidis (auto-pipelining).
//
//	go test -run '^$' -bench Clients -benchtime 100000x ./redis/
func BenchmarkClients(b *testing.B) {
	addr := testenv.RedisAddr(b)
	src, err := os.ReadFile("quota.lua")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	prefix := "sluicebench:" + testenv.Unique(b) + ":"
	gr := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: 128})
	defer gr.Close()
	cleanPrefix(b, gr, prefix)
	sha, err := gr.ScriptLoad(ctx, string(src)).Result()
	if err != nil {
		b.Fatal(err)
	}
	ap, err := gr.AutoPipeline()
	if err != nil {
		b.Fatal(err)
	}
	defer ap.Close()
	ru, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err != nil {
		b.Fatal(err)
	}
	defer ru.Close()

	args := func() []string {
		return []string{"take", "", "1", "0", "2", strconv.FormatInt(time.Now().Unix(), 10),
			"1000000", "3600", "", "0", "10000000", "86400", "", "0"}
	}
	anyArgs := func(a []string) []any {
		v := make([]any, len(a))
		for i := range a {
			v[i] = a[i]
		}
		return v
	}
	type client struct {
		name   string
		script func(key string) error
		base   func(key string) error
	}
	goredisBase := func(c goredis.Cmdable) func(key string) error {
		return func(key string) error {
			k := prefix + "base:" + key + ":" + strconv.FormatInt(time.Now().Unix()/3600, 10)
			pipe := c.Pipeline()
			pipe.Incr(ctx, k)
			pipe.Expire(ctx, k, time.Hour)
			_, err := pipe.Exec(ctx)
			return err
		}
	}
	clients := []client{
		{"go-redis", func(key string) error {
			return gr.EvalSha(ctx, sha, []string{prefix + key}, anyArgs(args())...).Err()
		}, goredisBase(gr)},
		{"go-redis-autopipeline", func(key string) error {
			return ap.EvalSha(ctx, sha, []string{prefix + key}, anyArgs(args())...).Err()
		}, func(key string) error {
			k := prefix + "base:" + key + ":" + strconv.FormatInt(time.Now().Unix()/3600, 10)
			if err := ap.Incr(ctx, k).Err(); err != nil {
				return err
			}
			return ap.Expire(ctx, k, time.Hour).Err()
		}},
		{"rueidis", func(key string) error {
			return ru.Do(ctx, ru.B().Evalsha().Sha1(sha).Numkeys(1).Key(prefix+key).Arg(args()...).Build()).Error()
		}, func(key string) error {
			k := prefix + "base:" + key + ":" + strconv.FormatInt(time.Now().Unix()/3600, 10)
			for _, r := range ru.DoMulti(ctx, ru.B().Incr().Key(k).Build(), ru.B().Expire().Key(k).Seconds(3600).Build()) {
				if err := r.Error(); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, accounts := range []int{10_000, 1} {
		for _, c := range clients {
			b.Run(c.name+"/script/keys="+strconv.Itoa(accounts), func(b *testing.B) { runCallers(b, accounts, c.script) })
			b.Run(c.name+"/incr-expire/keys="+strconv.Itoa(accounts), func(b *testing.B) { runCallers(b, accounts, c.base) })
		}
	}
}
