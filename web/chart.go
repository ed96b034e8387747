package web

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice"
)

// A chart is drawn by the server as SVG: no script is needed to see it, the
// CSP needs no exception, and the same numbers are in a table beside it
// (and in the SVG's accessible label) for screen readers and tests.

// Geometry of a chart, in SVG user units.
const (
	chartW      = 760
	chartH      = 170
	chartLeft   = 40 // room for the y labels
	chartBottom = 22 // room for the x labels
	chartTop    = 8
)

// chart is a bar chart of images per bucket, stacked by channel.
type chart struct {
	Title   string
	Label   string // the accessible summary
	Unit    string // "Hour (UTC)", "Day (UTC)"
	Width   int
	Height  int
	Base    int // y of the x axis
	Left    int
	TickX   int // x of the y labels' right edge
	XLabelY int // baseline of the x labels
	Bars    []bar
	Ticks   []tick
	Total   int64
	Max     int64
	Empty   bool
}

type bar struct {
	Label    string // "14:00", "Dec 7"
	Start    time.Time
	API      int64
	Telegram int64
	Total    int64
	X, W     float64
	// Segments from the axis up: API, then Telegram.
	APIY, APIH float64
	TGY, TGH   float64
	ShowLabel  bool
	LabelX     float64
}

type tick struct {
	Y     float64
	Label string
}

// charts returns the account's last 24 hours by hour and last 30 days by
// day (UTC), split by channel.
func (s *Server) charts(ctx context.Context, accountID int64) (hourly, daily *chart, err error) {
	now := s.now().UTC()
	hStart := now.Truncate(time.Hour).Add(-23 * time.Hour)
	hb, err := s.Usage.UsageHistory(ctx, sluice.UsageQuery{AccountID: accountID, Granularity: sluice.GranularityHour,
		From: hStart, To: hStart.Add(24 * time.Hour), GroupBy: sluice.GroupByChannel})
	if err != nil {
		return nil, nil, err
	}
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	dStart := today.AddDate(0, 0, -29)
	db, err := s.Usage.UsageHistory(ctx, sluice.UsageQuery{AccountID: accountID, Granularity: sluice.GranularityDay,
		From: dStart, To: today.AddDate(0, 0, 1), GroupBy: sluice.GroupByChannel})
	if err != nil {
		return nil, nil, err
	}
	hourly = buildChart("Last 24 hours", "Hour (UTC)", hStart, 24, func(t time.Time) time.Time { return t.Add(time.Hour) },
		func(t time.Time) string { return t.Format("15:04") }, 6, hb)
	daily = buildChart("Last 30 days", "Day (UTC)", dStart, 30, func(t time.Time) time.Time { return t.AddDate(0, 0, 1) },
		func(t time.Time) string { return t.Format("Jan 2") }, 7, db)
	return hourly, daily, nil
}

// buildChart lays out n buckets from start (next gives each bucket's
// successor) with the images of the history buckets in them; every
// labelEvery-th bucket gets its label under the axis.
func buildChart(title, unit string, start time.Time, n int, next func(time.Time) time.Time,
	label func(time.Time) string, labelEvery int, buckets []sluice.UsageBucket) *chart {
	c := &chart{Title: title, Unit: unit, Width: chartW, Height: chartH, Base: chartH - chartBottom, Left: chartLeft,
		TickX: chartLeft - 6, XLabelY: chartH - 6}
	index := map[int64]int{}
	t := start
	for i := 0; i < n; i++ {
		c.Bars = append(c.Bars, bar{Label: label(t), Start: t})
		index[t.Unix()] = i
		t = next(t)
	}
	for _, b := range buckets {
		i, ok := index[b.Start.UTC().Unix()]
		if !ok || b.Images <= 0 {
			continue
		}
		if b.Group == sluice.ChannelTelegram {
			c.Bars[i].Telegram += b.Images
		} else {
			c.Bars[i].API += b.Images
		}
	}
	for i := range c.Bars {
		c.Bars[i].Total = c.Bars[i].API + c.Bars[i].Telegram
		c.Total += c.Bars[i].Total
		c.Max = max(c.Max, c.Bars[i].Total)
	}
	c.Empty = c.Total == 0
	top := niceCeil(max(c.Max, 4))
	plotH := float64(c.Base - chartTop)
	slot := float64(chartW-chartLeft) / float64(n)
	for i := range c.Bars {
		b := &c.Bars[i]
		b.X = float64(chartLeft) + float64(i)*slot + slot*0.15
		b.W = slot * 0.7
		b.APIH = plotH * float64(b.API) / float64(top)
		b.APIY = float64(c.Base) - b.APIH
		b.TGH = plotH * float64(b.Telegram) / float64(top)
		b.TGY = b.APIY - b.TGH
		b.ShowLabel = i%labelEvery == 0
		b.LabelX = b.X + b.W/2
	}
	for _, f := range []int64{0, top / 2, top} {
		c.Ticks = append(c.Ticks, tick{Y: float64(c.Base) - plotH*float64(f)/float64(top), Label: strconv.FormatInt(f, 10)})
	}
	c.Label = fmt.Sprintf("%s: %s images, at most %s in one %s.", title, formatNum(c.Total), formatNum(c.Max),
		map[bool]string{true: "hour", false: "day"}[unit == "Hour (UTC)"])
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, and to an even
// number so that the middle tick is whole.
func niceCeil(v int64) int64 {
	p := int64(1)
	for {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= v && (m*p)%2 == 0 {
				return m * p
			}
		}
		p *= 10
	}
}
