#!/usr/bin/env bash
# Fails when negotiate/internal/fb is stale: regenerates it from
# handshake.fbs into a temporary directory and compares.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash gen.sh "$tmp"
if ! diff -u internal/fb/handshake_generated.go "$tmp/handshake_generated.go"; then
	echo "negotiate/internal/fb is stale: run 'go generate ./negotiate' and commit the result" >&2
	exit 1
fi
echo "negotiate/internal/fb is up to date"
