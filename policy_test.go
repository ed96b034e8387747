package sluice_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice"
)

func TestWindowConfigAccountPolicy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		c         sluice.WindowConfig
		hour, day time.Duration
	}{
		{"defaults", sluice.WindowConfig{}, time.Hour, 24 * time.Hour},
		{"configured", sluice.WindowConfig{Algorithm: sluice.Calendar, Hour: 10 * time.Second, Day: time.Minute, Location: time.UTC}, 10 * time.Second, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.c.AccountPolicy(5, sluice.Unlimited)
			if p.Algorithm != tc.c.Algorithm || p.Location != tc.c.Location {
				t.Errorf("algorithm, location = %v, %v; want %v, %v", p.Algorithm, p.Location, tc.c.Algorithm, tc.c.Location)
			}
			want := []sluice.Window{{Name: "hour", Length: tc.hour, Limit: 5}, {Name: "day", Length: tc.day, Limit: sluice.Unlimited}}
			if len(p.Windows) != 2 || p.Windows[sluice.HourWindow] != want[0] || p.Windows[sluice.DayWindow] != want[1] {
				t.Errorf("windows = %+v, want %+v", p.Windows, want)
			}
		})
	}
}
