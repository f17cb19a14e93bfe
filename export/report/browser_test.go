package report

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBrowserRender loads the sample's report in a real headless browser (Debian's
// chromium, when on PATH; scripts/report_browser_check.sh installs it) and checks that the
// page renders its sections and plots, logs no error, fetches nothing, and screenshots.
// Set KTOLOADER_REPORT_SHOT to keep the screenshot.
func TestBrowserRender(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	browser := ""
	for _, b := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(b); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("no chromium on PATH (scripts/report_browser_check.sh installs it)")
	}
	dir := prepSample(t)
	page := filepath.Join(t.TempDir(), "report.html")
	if _, err := Write(dir, page, Options{ToolSchemas: schemasPath}); err != nil {
		t.Fatal(err)
	}
	shot := os.Getenv("KTOLOADER_REPORT_SHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "report.png")
	}
	netLog := filepath.Join(t.TempDir(), "netlog.json")
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0",
		// Nothing may leave the machine; the net log shows what was asked for anyway.
		"--host-resolver-rules=MAP * ~NOTFOUND", "--log-net-log=" + netLog}
	// run starts the browser, once more when it crashes (killed by a signal): headless
	// chromium on a loaded machine now and then segfaults at start, which says nothing
	// about the page.
	run := func(args ...string) (stdout, stderr []byte) {
		var err error
		for try := 0; try < 2; try++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			cmd := exec.CommandContext(ctx, browser, append(flags, args...)...)
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			err = cmd.Run()
			cancel()
			if err == nil {
				return o.Bytes(), e.Bytes()
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != -1 { // -1: killed by a signal
				t.Fatalf("%s %v: %v\n%s", browser, args, err, e.Bytes())
			}
			stderr = e.Bytes()
		}
		t.Fatalf("%s %v crashed twice: %v\n%s", browser, args, err, stderr)
		return nil, nil
	}
	dom, log := run("--dump-dom", "file://"+page)
	for _, want := range []string{`id="findings"`, `id="shortcuts"`, `id="schema"`, `id="duplicates"`, "<svg", "answer calls a tool"} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	// The page has no script: any console line is an error, and so is any fetch.
	if bad := regexp.MustCompile(`:CONSOLE[:(]|Uncaught|net::ERR_|Failed to load resource`).FindAll(log, -1); len(bad) > 0 {
		t.Errorf("the browser logged errors or loads:\n%s", log)
	}
	if fetched := pageFetches(t, netLog); len(fetched) > 0 {
		t.Errorf("the page fetched %v", fetched)
	}
	_, log = run("--window-size=1200,2400", "--screenshot="+shot, "file://"+page)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v\n%s", err, log)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Errorf("screenshot is %d bytes, not a PNG of a page", len(png))
	}
	if strings.Contains(string(log), ":CONSOLE") || strings.Contains(string(log), "Uncaught") {
		t.Errorf("errors while taking the screenshot:\n%s", log)
	}
}

// browserHosts are the browser's own services, which headless chromium calls whatever
// flags say; requests to them are not the page's.
var browserHosts = regexp.MustCompile(`(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)$`)

// pageFetches lists the http(s) hosts in a chromium net log that are not the browser's own.
func pageFetches(t *testing.T, netLog string) []string {
	t.Helper()
	data, err := os.ReadFile(netLog)
	if err != nil {
		t.Fatalf("no net log: %v", err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`"url":"https?://([^"/:?]+)`).FindAllSubmatch(data, -1) {
		if h := string(m[1]); !browserHosts.MatchString(h) && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}
