#!/usr/bin/env bash
# Runs every fuzz target of the module (this package's cross-layer targets
# and the per-package ones) for a bounded total time, split evenly:
#
#   fuzz/run.sh [TOTAL]     TOTAL in seconds (default $FUZZ_BUDGET or 300)
#
# A failing input is written under the package's testdata/fuzz as usual and
# fails the run (turn it into a regression test). Prints each target's
# executions, for docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-${FUZZ_BUDGET:-300}}

targets=()
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		targets+=("$pkg $target")
	done
done
n=${#targets[@]}
per=$(( total / n ))
[ "$per" -ge 5 ] || per=5
echo "fuzz: $n targets, ${per}s each (budget ${total}s)"

summary=()
for entry in "${targets[@]}"; do
	read -r pkg target <<<"$entry"
	dir=$(go list -f '{{.Dir}}' "$pkg")
	echo "--- $pkg $target (${per}s)"
	log=$(mktemp)
	# Interesting inputs are minimized for a few runs only: the cross-layer
	# targets' coverage varies with scheduling, and minimizing each new
	# input for seconds would take the whole budget.
	if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "${per}s" -fuzzminimizetime 20x "$pkg" 2>&1 | tee "$log"; then
		# Go 1.26's fuzz coordinator can report its own -fuzztime deadline
		# as a failure ("context deadline exceeded", golang/go#75804, fixed
		# in Go 1.27). That is not a finding as long as no failing input was
		# written; anything else fails the run.
		new=$(git status --porcelain --untracked-files=all -- "$dir/testdata/fuzz/$target")
		if [ -z "$new" ] && grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input written' "$log"; then
			echo "--- $target: Go fuzz coordinator deadline race (golang/go#75804), no failing input: not a finding"
		else
			rm -f "$log"
			exit 1
		fi
	fi
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
	summary+=("$(printf '%-52s %-28s %8s execs in %ss' "${pkg#github.com/ringwire/ringwire/}" "$target" "${execs:-?}" "$per")")
	rm -f "$log"
done
echo
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
