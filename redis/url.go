package redis

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

// NewClient returns a client for a redis.url, connected (rueidis dials at
// once). The forms accepted:
//
//	redis://[user:password@]host:port[/db][?options]    one server
//	rediss://...                                          one server over TLS
//	unix://[user:password@]/path/to/socket[?db=N]         one server on a Unix socket
//	valkey://..., valkeys://...                           the same as redis://, rediss://
//	redis+cluster://[user:password@]host:port[,host:port...][?options]
//	rediss+cluster://...                                  Redis Cluster (seed nodes), over TLS
//	redis+sentinel://[user:password@]host:port[,host:port...]/master[/db][?options]
//	rediss+sentinel://...                                 Sentinel: the master named, found through the sentinels
//
// options are go-redis's URL options (dial_timeout, read_timeout,
// pool_size, ...), parsed by go-redis as before the store moved to rueidis
// and mapped to rueidis's (see ParseURL); a Sentinel URL also takes
// sentinel_username and sentinel_password, the credentials of the sentinels
// (user:password being the master's).
func NewClient(rawURL string) (rueidis.Client, error) {
	o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := rueidis.NewClient(o)
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("redis: %w", err)
	}
	return c, nil
}

// ParseURL parses a redis.url of a form NewClient accepts into rueidis's
// options, without connecting. Of go-redis's options it maps the address(es),
// credentials, database, TLS, dial_timeout, read_timeout and write_timeout
// (rueidis has one timeout for both: the larger), pool_size (rueidis's pool
// of connections for blocking calls; other calls share pipelined
// connections) and max_retries=-1 (no retry; rueidis retries only read-only
// calls, never the quota script). Client-side caching is off.
func ParseURL(rawURL string) (rueidis.ClientOption, error) {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return rueidis.ClientOption{}, fmt.Errorf("redis.url: not a URL")
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "unix", "valkey", "valkeys":
		u := rawURL
		if l := strings.ToLower(scheme); strings.HasPrefix(l, "valkey") {
			u = "redis" + strings.TrimPrefix(l, "valkey") + "://" + rest
		}
		o, err := goredis.ParseURL(u)
		if err != nil {
			return rueidis.ClientOption{}, fmt.Errorf("redis.url: %w", err)
		}
		c := option([]string{o.Addr}, o.Username, o.Password, o.DB, o.TLSConfig, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolSize, o.MaxRetries)
		c.ForceSingleClient = true
		if o.Network == "unix" {
			c.DialCtxFn = func(ctx context.Context, addr string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
				return d.DialContext(ctx, "unix", addr)
			}
		}
		return c, nil
	case "redis+cluster", "rediss+cluster":
		o, err := ParseClusterURL(rawURL)
		if err != nil {
			return rueidis.ClientOption{}, err
		}
		c := option(o.Addrs, o.Username, o.Password, 0, o.TLSConfig, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolSize, o.MaxRetries)
		c.ShuffleInit = true
		return c, nil
	case "redis+sentinel", "rediss+sentinel":
		o, err := ParseSentinelURL(rawURL)
		if err != nil {
			return rueidis.ClientOption{}, err
		}
		c := option(o.SentinelAddrs, o.Username, o.Password, o.DB, o.TLSConfig, o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolSize, o.MaxRetries)
		c.Sentinel = rueidis.SentinelOption{MasterSet: o.MasterName, Username: o.SentinelUsername, Password: o.SentinelPassword, TLSConfig: o.TLSConfig}
		c.Sentinel.Dialer.Timeout = o.DialTimeout
		return c, nil
	}
	return rueidis.ClientOption{}, fmt.Errorf("redis.url: unknown scheme %q", scheme)
}

func option(addrs []string, user, password string, db int, tc *tls.Config, dial, read, write time.Duration, pool, retries int) rueidis.ClientOption {
	c := rueidis.ClientOption{
		InitAddress:  addrs,
		Username:     user,
		Password:     password,
		SelectDB:     db,
		TLSConfig:    tc,
		DisableCache: true,
		DisableRetry: retries < 0,
	}
	c.Dialer.Timeout = max(dial, 0)
	c.ConnWriteTimeout = max(read, write, 0)
	if pool > 0 {
		c.BlockingPoolSize = pool
	}
	return c
}

// splitHosts splits "scheme://[userinfo@]h1,h2/path?query" into the single
// host URL "base://[userinfo@]h1/path?query" and the hosts.
func splitHosts(rawURL, base string) (first *url.URL, hosts []string, err error) {
	_, rest, _ := strings.Cut(rawURL, "://")
	auth := rest
	tail := ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		auth, tail = rest[:i], rest[i:]
	}
	user := ""
	if i := strings.LastIndex(auth, "@"); i >= 0 {
		user, auth = auth[:i+1], auth[i+1:]
	}
	hosts = strings.Split(auth, ",")
	for _, h := range hosts {
		if h == "" {
			return nil, nil, fmt.Errorf("redis.url: empty host")
		}
	}
	u, err := url.Parse(base + "://" + user + hosts[0] + tail)
	if err != nil {
		return nil, nil, fmt.Errorf("redis.url: %w", err)
	}
	return u, hosts, nil
}

func tlsBase(rawURL string) string {
	if strings.HasPrefix(strings.ToLower(rawURL), "rediss+") {
		return "rediss"
	}
	return "redis"
}

// ParseClusterURL parses a redis+cluster:// or rediss+cluster:// URL.
func ParseClusterURL(rawURL string) (*goredis.ClusterOptions, error) {
	u, hosts, err := splitHosts(rawURL, tlsBase(rawURL))
	if err != nil {
		return nil, err
	}
	q := u.Query()
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	u.RawQuery = q.Encode()
	o, err := goredis.ParseClusterURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	return o, nil
}

// ParseSentinelURL parses a redis+sentinel:// or rediss+sentinel:// URL.
func ParseSentinelURL(rawURL string) (*goredis.FailoverOptions, error) {
	u, hosts, err := splitHosts(rawURL, tlsBase(rawURL))
	if err != nil {
		return nil, err
	}
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if parts[0] == "" {
		return nil, fmt.Errorf("redis.url: a Sentinel URL names the master: redis+sentinel://host:26379/mymaster")
	}
	db := 0
	if len(parts) > 1 {
		if db, err = strconv.Atoi(parts[1]); err != nil {
			return nil, fmt.Errorf("redis.url: invalid database number %q", parts[1])
		}
	}
	q := u.Query()
	sUser, sPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	// Let go-redis parse the common options from a single-server URL.
	single := *u
	single.Path = "/" + strconv.Itoa(db)
	single.RawQuery = q.Encode()
	so, err := goredis.ParseURL(single.String())
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	return &goredis.FailoverOptions{
		MasterName:       parts[0],
		SentinelAddrs:    hosts,
		SentinelUsername: sUser,
		SentinelPassword: sPass,
		Username:         so.Username,
		Password:         so.Password,
		DB:               so.DB,
		DialTimeout:      so.DialTimeout,
		ReadTimeout:      so.ReadTimeout,
		WriteTimeout:     so.WriteTimeout,
		PoolSize:         so.PoolSize,
		MinIdleConns:     so.MinIdleConns,
		MaxRetries:       so.MaxRetries,
		TLSConfig:        so.TLSConfig,
	}, nil
}
