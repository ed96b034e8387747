package redis_test

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/redis"
)

func TestSupported(t *testing.T) {
	for v, want := range map[string][2]bool{
		"7.0.15":  {true, true},
		"6.2.0":   {true, true},
		"6.2":     {true, true},
		"10.0.1":  {true, true},
		"6.0.20":  {false, true},
		"5.0.14":  {false, true},
		"255.255": {true, true},
		"":        {false, false},
		"7":       {false, false},
		"x.y.z":   {false, false},
		"-1.9":    {false, false},
		"7.-1":    {false, false},
	} {
		if ok, known := redis.Supported(v); ok != want[0] || known != want[1] {
			t.Errorf("Supported(%q) = %v, %v; want %v, %v", v, ok, known, want[0], want[1])
		}
	}
}

// FuzzSupported: any version string is read or refused, never a panic, and
// a supported one is a known one.
func FuzzSupported(f *testing.F) {
	for _, v := range []string{"7.0.15", "6.2", "6.1.9", "", "99999999999999999999.1", "7..1"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if ok, known := redis.Supported(v); ok && !known {
			t.Fatalf("Supported(%q): supported but not known", v)
		}
	})
}

// TestVersion: the test server's version is read and supported.
func TestVersion(t *testing.T) {
	s := redis.New(storeClient(t), redis.Options{})
	v, err := s.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ok, known := redis.Supported(v); !ok || !known {
		t.Fatalf("version %q: supported %v, known %v", v, ok, known)
	}
}
