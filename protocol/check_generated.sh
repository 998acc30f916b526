#!/usr/bin/env bash
# Fails when protocol/internal/fb is stale: regenerates it from
# control.fbs into a temporary directory and compares.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash gen.sh "$tmp"
if ! diff -u internal/fb/control_generated.go "$tmp/control_generated.go"; then
	echo "protocol/internal/fb is stale: run 'go generate ./protocol' and commit the result" >&2
	exit 1
fi
echo "protocol/internal/fb is up to date"
