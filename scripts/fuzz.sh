#!/usr/bin/env bash
# Runs every Go fuzz target of the module (each `func FuzzXxx` in a *_test.go file) for the
# given duration, one after another: scripts/fuzz.sh 10s (the default), scripts/fuzz.sh 10m.
# FUZZ_PARALLEL=N sets the fuzzing workers per target (default: go test's, GOMAXPROCS).
# New failing inputs land in the package's testdata/fuzz/FuzzXxx/ (commit them once fixed:
# they then run with every `go test`). Exits 1 if any target failed, after running them all.
set -euo pipefail
cd "$(dirname "$0")/.."

dur="${1:-10s}"
par=()
if [[ -n "${FUZZ_PARALLEL:-}" ]]; then
	par=(-parallel "$FUZZ_PARALLEL")
fi

# "dir name" per target, sorted; testdata and hidden directories hold no packages.
mapfile -t targets < <(find . -name '*_test.go' -not -path '*/testdata/*' -not -path './.*' -print0 |
	xargs -0 grep -H -E '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' |
	sed -E 's#^\./(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\(.*#\1 \2#' | sort)
if [[ ${#targets[@]} -eq 0 ]]; then
	echo "fuzz.sh: no fuzz targets found" >&2
	exit 1
fi

failed=()
for t in "${targets[@]}"; do
	read -r dir name <<<"$t"
	echo "== fuzz ./$dir $name for $dur"
	if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$dur" "${par[@]}" "./$dir"; then
		failed+=("./$dir $name")
	fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
	printf 'fuzz.sh: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran $dur each, no failure"
