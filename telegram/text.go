package telegram

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice"
)

// The bot's fixed texts.
const (
	helpText = `Send me any text and I'll draw it.

Commands:
/usage - what is left of your quota
/models - the models, and which your plan can use
/model <id> - choose the model for your prompts
/plan - your plan and the others
/link <code> - use this chat with your existing sluice account (get a code with POST /v1/telegram/link)
/help - this message

Images made here and through the API count toward the same limits.`

	notTextText    = "Send me a text prompt and I'll draw it. /help lists the commands."
	unknownCmdText = "I don't know that command. /help lists the commands; any other text is a prompt."
	internalText   = "Sorry, something went wrong on our side. Nothing was charged; please try again in a moment."
	unavailText    = "Sorry, I can't check your quota right now, so I didn't generate anything and nothing was charged. Please try again in a moment."
	upstreamText   = "Sorry, the image generator failed, so nothing was charged. Please try again in a moment."
	linkUsageText  = "Send /link followed by the code you got from POST /v1/telegram/link, like /link AbC123xYz0. Codes can be used once and expire."
	linkBadText    = "That link code is unknown or has expired. Get a new one with POST /v1/telegram/link and send /link CODE again."
)

// windowWords are how the bot names a window.
var windowWords = map[string]struct{ adj, noun, this string }{
	"hour": {"Hourly", "hour", "this hour"},
	"day":  {"Daily", "day", "today"},
}

func wordsOf(name string) (adj, noun, this string) {
	if w, ok := windowWords[name]; ok {
		return w.adj, w.noun, w.this
	}
	return "The " + name, name, "this " + name
}

// overQuotaText is the answer to a prompt the quota rejected (d): which
// window, its limit, the plan, when the user can go on and how to get more.
// For example:
//
//	Hourly limit reached: 5 images/hour on the Starter plan. You can go on
//	in 14 min, at 15:42 UTC. For more images, upgrade your plan: /plan
//	shows them.
func overQuotaText(p *sluice.Plan, d *sluice.Decision) string {
	w := d.Windows[max(d.Blocking, 0)]
	adj, noun, _ := wordsOf(w.Name)
	if d.RetryAfter == sluice.InfDuration {
		return fmt.Sprintf("Your %s limit is %d images/%s on the %s plan, so no image can be generated. For more images, upgrade your plan: /plan shows them.",
			strings.ToLower(adj), w.Limit, noun, p.Name)
	}
	wait := time.Duration(d.RetryAfterSeconds()) * time.Second
	return fmt.Sprintf("%s limit reached: %d images/%s on the %s plan. You can go on %s. For more images, upgrade your plan: /plan shows them.",
		adj, w.Limit, noun, p.Name, when(d.Time, wait))
}

// when says when an instant wait after now is, in the user's terms and in
// UTC: "in 42 s, at 15:41:42 UTC", "in 14 min, at 15:42 UTC",
// "in 3 h 5 min, at 18:47 UTC tomorrow". Rounding is always up, so that
// the user who waits as told is not refused again.
func when(now time.Time, wait time.Duration) string {
	now = now.UTC()
	at := now.Add(wait)
	var in, clock string
	switch {
	case wait < time.Minute:
		s := max(int64((wait+time.Second-1)/time.Second), 1)
		at = now.Add(time.Duration(s) * time.Second).Truncate(time.Second)
		in = strconv.FormatInt(s, 10) + " s"
		clock = at.Format("15:04:05")
	default:
		if t := at.Truncate(time.Minute); !t.Equal(at) {
			at = t.Add(time.Minute)
		}
		m := int64((wait + time.Minute - 1) / time.Minute)
		if m < 60 {
			in = strconv.FormatInt(m, 10) + " min"
		} else {
			in = strconv.FormatInt(m/60, 10) + " h"
			if m%60 != 0 {
				in += " " + strconv.FormatInt(m%60, 10) + " min"
			}
		}
		clock = at.Format("15:04")
	}
	s := "in " + in + ", at " + clock + " UTC"
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

// remainingText says what is left after d, per limited window:
// "4 of 5 left this hour, 19 of 20 today", or "no limits" for a plan
// without any.
func remainingText(d *sluice.Decision) string {
	var parts []string
	for _, w := range d.Statuses() {
		if w.Limit.IsUnlimited() {
			continue
		}
		_, _, this := wordsOf(w.Name)
		parts = append(parts, fmt.Sprintf("%d of %d left %s", max(w.Remaining, 0), w.Limit, this))
	}
	if len(parts) == 0 {
		return "no limits on your plan"
	}
	if len(parts) == 2 {
		// "4 of 5 left this hour, 19 of 20 today"
		parts[1] = strings.Replace(parts[1], " left ", " ", 1)
	}
	return strings.Join(parts, ", ")
}

// usageText answers /usage from a Peek.
func usageText(p *sluice.Plan, a *sluice.Account, d *sluice.Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "You're on the %s plan.", p.Name)
	for _, w := range d.Statuses() {
		_, noun, this := wordsOf(w.Name)
		b.WriteString("\n")
		if w.Limit.IsUnlimited() {
			fmt.Fprintf(&b, "%s: no limit.", capitalize(this))
			continue
		}
		fmt.Fprintf(&b, "%s: %d of %d images/%s used, %d left", capitalize(this), w.Used(), w.Limit, noun, max(w.Remaining, 0))
		if w.Remaining < int64(w.Limit) && w.Reset.After(d.Time) {
			fmt.Fprintf(&b, "; one more %s", when(d.Time, w.Reset.Sub(d.Time)))
		}
		b.WriteString(".\n" + usageBar(w.Used(), w.Limit))
	}
	if a.Override != nil {
		b.WriteString("\n(Your account has limits of its own, set by an administrator.)")
	}
	return b.String()
}

// limitText is "5/hour, 20/day", with "unlimited" for windows without a
// limit.
func limitText(hour, day sluice.Limit) string {
	f := func(l sluice.Limit, noun string) string {
		if l.IsUnlimited() {
			return "unlimited"
		}
		return fmt.Sprintf("%d/%s", l, noun)
	}
	if hour.IsUnlimited() && day.IsUnlimited() {
		return "unlimited images"
	}
	return f(hour, "hour") + ", " + f(day, "day") + " images"
}

func modelsWords(p *sluice.Plan) string {
	if p.Models == sluice.ModelsAll {
		return "all models"
	}
	return "starter-tier models only"
}

// planText answers /plan: the user's plan, then every plan.
func planText(plans []sluice.Plan, p *sluice.Plan, a *sluice.Account) string {
	var b strings.Builder
	hour, day := a.Limits(p)
	fmt.Fprintf(&b, "You're on the %s plan: %s, %s.", p.Name, limitText(hour, day), modelsWords(p))
	if a.Override != nil {
		b.WriteString(" (Your account has limits of its own, set by an administrator.)")
	}
	b.WriteString("\n\nPlans:")
	for i := range plans {
		q := &plans[i]
		mark := ""
		if q.ID == p.ID {
			mark = " (yours)"
		}
		api := ""
		if q.API {
			api = ", API access"
		}
		fmt.Fprintf(&b, "\n- %s%s: %s, %s%s", q.Name, mark, limitText(q.Hour, q.Day), modelsWords(q), api)
	}
	b.WriteString("\n\nTo upgrade, ask the operator of this service to move your account to a bigger plan. Images here and through the API count toward the same limits.")
	return b.String()
}

// modelsText answers /models, marking the chosen model and those the plan
// may not use.
func modelsText(models []sluice.Model, p *sluice.Plan, chosen string) string {
	var b strings.Builder
	b.WriteString("Models:")
	for i := range models {
		m := &models[i]
		fmt.Fprintf(&b, "\n- %s", m.ID)
		switch {
		case !p.AllowsModel(m):
			fmt.Fprintf(&b, " (not on the %s plan; upgrade to use it)", p.Name)
		case m.ID == chosen:
			b.WriteString(" (yours)")
		}
	}
	b.WriteString("\n\nChoose one with the buttons below, or with /model <id>.")
	return b.String()
}

// captionText is the caption of a generated image.
func captionText(prompt, model string, d *sluice.Decision) string {
	if d == nil {
		return shorten(prompt, 300) + "\n" + model
	}
	return shorten(prompt, 300) + "\n" + model + " · " + remainingText(d)
}

// shorten cuts s to at most n runes, with an ellipsis if it was longer.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
