package quota

import (
	"time"

	"github.com/sluicehq/sluice"
)

// CalendarStart returns the Unix second at which the calendar window w of p
// that holds t started, as Take and Refund count it. Stores that run the
// algorithms elsewhere (the Redis script) use it to name a charge's window.
func CalendarStart(p *sluice.Policy, w *sluice.Window, t time.Time) int64 {
	return calendarStart(p, w, t)
}
