package redis

import (
	"testing"
	"time"
)

func TestURLs(t *testing.T) {
	for _, u := range []string{
		"redis://127.0.0.1:6379/2",
		"rediss://user:pw@example.com:6380",
		"unix:///tmp/redis.sock?db=1",
		"valkey://127.0.0.1:6379",
		"redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
		"redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/3?sentinel_password=s",
	} {
		if _, err := ParseURL(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	co, err := ParseClusterURL("rediss+cluster://u:p@h1:7000,h2:7001,h3:7002?read_timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if len(co.Addrs) != 3 || co.Addrs[2] != "h3:7002" || co.Username != "u" || co.Password != "p" || co.TLSConfig == nil || co.ReadTimeout != 2*time.Second {
		t.Errorf("cluster options: %+v", co)
	}
	fo, err := ParseSentinelURL("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/3?sentinel_password=sp")
	if err != nil {
		t.Fatal(err)
	}
	if fo.MasterName != "mymaster" || len(fo.SentinelAddrs) != 2 || fo.DB != 3 || fo.Password != "pw" || fo.SentinelPassword != "sp" {
		t.Errorf("sentinel options: %+v", fo)
	}
	for _, bad := range []string{"127.0.0.1:6379", "http://x", "redis+sentinel://s1:26379", "redis+cluster://a,,b"} {
		if _, err := ParseURL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
