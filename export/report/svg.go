package report

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// Hand-written SVG: a few hundred bytes per plot, no library, no script, renders anywhere.
// Every text is escaped; numbers are formatted with fixed precision so the page is
// byte-identical between runs.

// Colors, chosen to stay apart for the common forms of color blindness.
const (
	colDesirable   = "#1b9e77"
	colUndesirable = "#d95f02"
	colTrain       = "#4c72b0"
	colTest        = "#b07aa1"
	colMark        = "#c0392b"
	colGrid        = "#e4e4e4"
	colAxis        = "#555"
)

func esc(s string) string { return html.EscapeString(s) }

// f1 formats a coordinate.
func f1(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) }

// niceTicks returns about n round tick values covering [0, top].
func niceTicks(top float64, n int) []float64 {
	if top <= 0 {
		return []float64{0}
	}
	step := niceWidth(top/float64(n), 0)
	if step <= 0 {
		step = 1
	}
	var ticks []float64
	for v := 0.0; v <= top*1.0001; v += step {
		ticks = append(ticks, v)
	}
	return ticks
}

func fmtTick(v float64) string {
	if v == math.Trunc(v) {
		if math.Abs(v) >= 10000 {
			return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// mark is a vertical line on a histogram's x axis.
type mark struct {
	x     float64
	label string
}

// histPlot draws overlaid histogram series (translucent bars) with marks.
type histPlot struct {
	title  string
	xLabel string
	h      Histogram
	colors []string
	marks  []mark
	xPct   bool // x values are shares: label ticks as percentages
}

func (p histPlot) svg() string {
	const W, H = 640.0, 250.0
	const ml, mr, mt, mb = 56.0, 16.0, 30.0, 44.0
	pw, ph := W-ml-mr, H-mt-mb
	bins := 0
	var ymax int64
	for _, s := range p.h.Series {
		bins = max(bins, len(s.Counts))
		for _, c := range s.Counts {
			ymax = max(ymax, c)
		}
	}
	xlo := p.h.Lo
	xhi := p.h.Lo + float64(bins)*p.h.Width
	for _, m := range p.marks {
		xhi = math.Max(xhi, m.x)
	}
	if xhi <= xlo {
		xhi = xlo + 1
	}
	yticks := niceTicks(float64(max(ymax, 1)), 4)
	ytop := yticks[len(yticks)-1]
	if ytop < float64(ymax) {
		ytop = float64(ymax)
	}
	xs := func(x float64) float64 { return ml + (x-xlo)/(xhi-xlo)*pw }
	ys := func(y float64) float64 { return mt + ph - y/ytop*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s">`,
		f1(W), f1(H), f1(W), f1(H), esc(p.title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(p.title))
	fmt.Fprintf(&b, `<text x="%s" y="18" font-size="13" font-weight="600" fill="#222">%s</text>`, f1(ml), esc(p.title))
	for _, t := range yticks {
		y := ys(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, f1(ml), f1(y), f1(ml+pw), f1(y), colGrid)
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="end" fill="%s">%s</text>`, f1(ml-6), f1(y+3), colAxis, fmtTick(t))
	}
	// Series side by side within each bin: overlaid translucent bars mix into colors that
	// belong to neither.
	ns := float64(max(len(p.h.Series), 1))
	for si, s := range p.h.Series {
		col := p.colors[si%len(p.colors)]
		for i, c := range s.Counts {
			if c == 0 {
				continue
			}
			x0, x1 := xs(p.h.Lo+float64(i)*p.h.Width), xs(p.h.Lo+float64(i+1)*p.h.Width)
			bw := (x1 - x0 - 1) / ns
			y := ys(float64(c))
			fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s: %s: %d</title></rect>`,
				f1(x0+0.5+float64(si)*bw), f1(y), f1(math.Max(bw, 0.5)), f1(mt+ph-y), col, esc(s.Name), esc(p.binLabel(i, len(s.Counts))), c)
		}
	}
	// x axis and ticks
	fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, f1(ml), f1(mt+ph), f1(ml+pw), f1(mt+ph), colAxis)
	for _, t := range niceTicks(xhi-xlo, 6) {
		v := xlo + t
		x := xs(v)
		lab := fmtTick(v)
		if p.xPct {
			lab = strconv.Itoa(int(math.Round(v*100))) + "%"
		}
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, f1(x), f1(mt+ph), f1(x), f1(mt+ph+4), colAxis)
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="middle" fill="%s">%s</text>`, f1(x), f1(mt+ph+15), colAxis, lab)
	}
	xLabel := p.xLabel
	if p.h.Open && bins > 0 {
		xLabel += fmt.Sprintf(" (the last bin holds all ≥ %s)", fmtTick(p.h.Lo+float64(bins-1)*p.h.Width))
	}
	fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="11" text-anchor="middle" fill="%s">%s</text>`, f1(ml+pw/2), f1(H-6), colAxis, esc(xLabel))
	fmt.Fprintf(&b, `<text x="12" y="%s" font-size="11" text-anchor="middle" fill="%s" transform="rotate(-90 12 %s)">rows</text>`, f1(mt+ph/2), colAxis, f1(mt+ph/2))
	for _, m := range p.marks {
		x := xs(m.x)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3"/>`, f1(x), f1(mt-4), f1(x), f1(mt+ph), colMark)
		anchor, dx := "end", -4.0
		if x < ml+pw*0.3 {
			anchor, dx = "start", 4
		}
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="%s" fill="%s">%s</text>`, f1(x+dx), f1(mt+6), anchor, colMark, esc(m.label))
	}
	// legend
	lx := ml + pw - 4
	for si := len(p.h.Series) - 1; si >= 0; si-- {
		s := p.h.Series[si]
		var n int64
		for _, c := range s.Counts {
			n += c
		}
		label := fmt.Sprintf("%s (%d)", s.Name, n)
		w := 14 + 6.2*float64(len([]rune(label)))
		lx -= w
		fmt.Fprintf(&b, `<rect x="%s" y="8" width="10" height="10" fill="%s"/>`, f1(lx), p.colors[si%len(p.colors)])
		fmt.Fprintf(&b, `<text x="%s" y="17" font-size="11" fill="#222">%s</text>`, f1(lx+13), esc(label))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func (p histPlot) binLabel(i, n int) string {
	lo := p.h.Lo + float64(i)*p.h.Width
	hi := lo + p.h.Width
	if p.h.Open && i == n-1 {
		return "≥ " + fmtTick(lo)
	}
	if p.xPct {
		return fmt.Sprintf("%d–%d%%", int(math.Round(lo*100)), int(math.Round(hi*100)))
	}
	return fmt.Sprintf("%s–%s", fmtTick(lo), fmtTick(hi-1))
}

// barRow is one row of a horizontal stacked bar chart.
type barRow struct {
	label  string
	values []int64
}

// stackedBars draws one horizontal bar per row, its values stacked in series order.
func stackedBars(title string, series, colors []string, rows []barRow) string {
	const W = 640.0
	const ml, mr, mt, rowH = 190.0, 60.0, 40.0, 18.0
	H := mt + rowH*float64(len(rows)) + 24
	pw := W - ml - mr
	var top int64
	for _, r := range rows {
		var s int64
		for _, v := range r.values {
			s += v
		}
		top = max(top, s)
	}
	ticks := niceTicks(float64(max(top, 1)), 5)
	xmax := math.Max(ticks[len(ticks)-1], float64(top))
	xs := func(v float64) float64 { return ml + v/xmax*pw }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s">`,
		f1(W), f1(H), f1(W), f1(H), esc(title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(title))
	fmt.Fprintf(&b, `<text x="8" y="18" font-size="13" font-weight="600" fill="#222">%s</text>`, esc(title))
	lx := 8.0
	for i, s := range series {
		fmt.Fprintf(&b, `<rect x="%s" y="26" width="10" height="10" fill="%s"/>`, f1(lx), colors[i])
		fmt.Fprintf(&b, `<text x="%s" y="35" font-size="11" fill="#222">%s</text>`, f1(lx+13), esc(s))
		lx += 24 + 6.2*float64(len([]rune(s)))
	}
	for _, t := range ticks {
		x := xs(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, f1(x), f1(mt), f1(x), f1(H-22), colGrid)
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="middle" fill="%s">%s</text>`, f1(x), f1(H-10), colAxis, fmtTick(t))
	}
	for i, r := range rows {
		y := mt + float64(i)*rowH
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="11" text-anchor="end" fill="#222">%s</text>`, f1(ml-6), f1(y+rowH*0.7), esc(cutHead(r.label, 30)))
		x := 0.0
		var sum int64
		for k, v := range r.values {
			if v > 0 {
				fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s, %s: %d</title></rect>`,
					f1(xs(x)), f1(y+2), f1(xs(x+float64(v))-xs(x)), f1(rowH-4), colors[k], esc(r.label), esc(series[k]), v)
			}
			x += float64(v)
			sum += v
		}
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" fill="%s">%d</text>`, f1(xs(x)+4), f1(y+rowH*0.7), colAxis, sum)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// strengthChart draws each shortcut's strength, max(AUC, 1−AUC), from 0.5 (no signal) to
// 1 (decides the label), with the level boundaries marked.
func strengthChart(scs []Shortcut) string {
	const W = 640.0
	const ml, mr, mt, rowH = 270.0, 50.0, 34.0, 20.0
	H := mt + rowH*float64(len(scs)) + 26
	pw := W - ml - mr
	xs := func(v float64) float64 { return ml + (v-0.5)/0.5*pw }
	var b strings.Builder
	title := "How well each feature alone predicts the label (strength = max(AUC, 1−AUC))"
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %s %s" width="%s" height="%s" role="img" aria-label="%s">`,
		f1(W), f1(H), f1(W), f1(H), esc(title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(title))
	fmt.Fprintf(&b, `<text x="8" y="18" font-size="13" font-weight="600" fill="#222">%s</text>`, esc(title))
	for _, z := range []struct {
		lo, hi float64
		col    string
		name   string
	}{{0.65, 0.75, "#fff4d6", LevelModerate}, {0.75, 0.9, "#ffe0cc", LevelStrong}, {0.9, 1, "#ffd0d0", LevelDecisive}} {
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"/>`, f1(xs(z.lo)), f1(mt-6), f1(xs(z.hi)-xs(z.lo)), f1(H-mt-20), z.col)
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="9" text-anchor="middle" fill="%s">%s</text>`, f1((xs(z.lo)+xs(z.hi))/2), f1(mt-9), colAxis, z.name)
	}
	for _, t := range []float64{0.5, 0.6, 0.7, 0.8, 0.9, 1} {
		x := xs(t)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s"/>`, f1(x), f1(mt-6), f1(x), f1(H-20), colGrid)
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" text-anchor="middle" fill="%s">%s</text>`, f1(x), f1(H-8), colAxis, strconv.FormatFloat(t, 'f', 1, 64))
	}
	for i, sc := range scs {
		y := mt + float64(i)*rowH
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="11" text-anchor="end" fill="#222">%s</text>`, f1(ml-6), f1(y+rowH*0.65), esc(cutHead(sc.Feature, 44)))
		col := "#8c8c8c"
		switch sc.Level {
		case LevelDecisive, LevelStrong:
			col = colMark
		case LevelModerate:
			col = "#e6a100"
		}
		w := math.Max(xs(sc.Strength)-xs(0.5), 1)
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s: AUC %.3f, accuracy %s</title></rect>`,
			f1(ml), f1(y+3), f1(w), f1(rowH-6), col, esc(sc.Feature), sc.AUC, pct(sc.Accuracy))
		fmt.Fprintf(&b, `<text x="%s" y="%s" font-size="10" fill="%s">%.3f</text>`, f1(ml+w+4), f1(y+rowH*0.65), colAxis, sc.Strength)
	}
	b.WriteString(`</svg>`)
	return b.String()
}
