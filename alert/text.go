package alert

import (
	"strconv"
	"time"
)

// windowWords are how the texts name a window: "this hour", "the hour".
var windowWords = map[string]struct{ adj, noun, this string }{
	"hour": {"hourly", "hour", "this hour"},
	"day":  {"daily", "day", "today"},
}

func wordsOf(name string) (adj, noun, this string) {
	if w, ok := windowWords[name]; ok {
		return w.adj, w.noun, w.this
	}
	return name, name, "this " + name
}

// mailFooter ends every alert mail.
const mailFooter = "\n\nTo stop these mails, call PUT /v1/alerts with {\"email\":false}.\n"

// text is the alert's message, in the words of the 429s: the use, the
// window, the plan and when the window resets, in UTC. For example:
//
//	You have used 80 of 100 images this hour on the VIP plan; the hour
//	resets at 15:42 UTC.
func (n *Notifier) text(c *crossing) string {
	_, noun, this := wordsOf(c.window)
	return "You have used " + itoa(c.used) + " of " + itoa(c.limit) + " images " + this +
		" on the " + n.planName(c.plan) + " plan; the " + noun + " resets at " + clock(c.at, c.reset) + "."
}

// subject is the alert mail's subject.
func (n *Notifier) subject(c *crossing) string {
	adj, _, _ := wordsOf(c.window)
	if c.used >= c.limit {
		return "Your " + adj + " image quota is used up"
	}
	return strconv.Itoa(c.threshold) + "% of your " + adj + " image quota is used"
}

// clock says when at is, seen from now, in UTC and rounded up to the
// minute: "15:42 UTC", "00:00 UTC tomorrow", "09:10 UTC on Wed 9 Dec".
func clock(now, at time.Time) string {
	now, at = now.UTC(), at.UTC()
	if t := at.Truncate(time.Minute); !t.Equal(at) {
		at = t.Add(time.Minute)
	}
	s := at.Format("15:04") + " UTC"
	switch days := dayNumber(at) - dayNumber(now); {
	case days == 1:
		s += " tomorrow"
	case days > 1:
		s += " on " + at.Format("Mon 2 Jan")
	}
	return s
}

func dayNumber(t time.Time) int64 {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
}
