#!/usr/bin/env bash
# report_browser_check.sh: render a ktoloader data-quality report in a real headless browser
# (Debian's chromium) and take a screenshot, checking that the page loads without errors and
# without fetching anything from the network.
#
#   scripts/report_browser_check.sh [REPORT.html [SCREENSHOT.png]]
#
# With no REPORT it runs prep on the embedded sample (demo tokenizer) into a temporary
# directory and reports on that. chromium is installed with apt-get when missing (as root, or
# with passwordless sudo); when it cannot be installed the check is skipped (exit 0 with a
# SKIP line). Exit 1 when the page fails to render, logs a console error, or tries to load a
# resource.
set -euo pipefail

cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

report=${1:-}
shot=${2:-$work/report.png}

if [[ -z "$report" ]]; then
	go run ./cmd/ktoloader prep --offline --out "$work/out" --test-frac 0.1 --no-progress >/dev/null 2>&1
	go run ./cmd/ktoloader report "$work/out" --html "$work/report.html" \
		--tool-schemas export/report/testdata/tool_schemas.json >/dev/null
	report=$work/report.html
fi
[[ -f "$report" ]] || { echo "FAIL: no report at $report" >&2; exit 1; }

browser=""
for b in chromium chromium-browser; do
	if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [[ -z "$browser" ]]; then
	sudo=""
	if [[ $(id -u) -ne 0 ]]; then
		if sudo -n true 2>/dev/null; then sudo="sudo -n"; else echo "SKIP: chromium missing and cannot be installed (not root)"; exit 0; fi
	fi
	if ! { $sudo apt-get install -y chromium >/dev/null 2>&1 || { $sudo apt-get update >/dev/null 2>&1 && $sudo apt-get install -y chromium >/dev/null 2>&1; }; }; then
		echo "SKIP: chromium could not be installed"
		exit 0
	fi
	browser=chromium
fi

profile=$(mktemp -d -p "$work")
abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
# Nothing may leave the machine (every host resolves to nothing); the net log shows what was
# asked for anyway.
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
	--disable-sync --no-first-run --user-data-dir="$profile" --hide-scrollbars
	--enable-logging=stderr --v=0 "--host-resolver-rules=MAP * ~NOTFOUND" --log-net-log="$work/netlog.json")

# browse runs chromium once more when it crashes (a signal, exit > 128): headless chromium
# on a loaded machine now and then segfaults at start, which says nothing about the page.
browse() {
	local rc=0
	"$browser" "${flags[@]}" "$@" || rc=$?
	if ((rc > 128)); then
		rc=0
		"$browser" "${flags[@]}" "$@" || rc=$?
	fi
	return $rc
}

# 1. The DOM after load: proves the page parsed and rendered its sections and plots.
browse --dump-dom "file://$abs" >"$work/dom.html" 2>"$work/dom.log" || {
	echo "FAIL: $browser could not load the page" >&2
	cat "$work/dom.log" >&2
	exit 1
}
for want in 'id="findings"' 'id="shortcuts"' '<svg' 'id="duplicates"'; do
	grep -q "$want" "$work/dom.html" || { echo "FAIL: rendered page lacks $want" >&2; exit 1; }
done
# The page has no script: any console line is an error.
if grep -E ':CONSOLE[:(]|Uncaught|net::ERR_|Failed to load resource' "$work/dom.log" >&2; then
	echo "FAIL: the page logged errors or tried to load something (above)" >&2
	exit 1
fi
# Headless chromium calls its own services (google.com, …) whatever the flags; any other
# http(s) host in the net log was asked for by the page.
fetched=$(grep -oE '"url":"https?://[^"/:?]+' "$work/netlog.json" | sed -E 's|.*://||' | sort -u |
	grep -vE '(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)$' || true)
if [[ -n "$fetched" ]]; then
	echo "FAIL: the page fetched from: $fetched" >&2
	exit 1
fi

# 2. A screenshot of the top of the page, tall enough for the findings and shortcut plot.
browse --window-size=1200,2400 --screenshot="$shot" "file://$abs" >/dev/null 2>"$work/shot.log" || {
	echo "FAIL: screenshot failed" >&2
	cat "$work/shot.log" >&2
	exit 1
}
[[ -s "$shot" ]] || { echo "FAIL: empty screenshot" >&2; exit 1; }
echo "OK: $report rendered in $browser without errors; screenshot $shot"
