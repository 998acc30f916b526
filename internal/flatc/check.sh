#!/usr/bin/env bash
# Fails when a package's generated FlatBuffers code is stale: regenerates it
# from its schema into a temporary directory and compares.
#
#   internal/flatc/check.sh PKGDIR SCHEMA.fbs
set -euo pipefail
pkg="$1"
schema="$2"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$pkg"
name="$(basename "$schema" .fbs)_generated.go"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash "$here/gen.sh" "$schema" "$tmp"
if ! diff -u "internal/fb/$name" "$tmp/$name"; then
	echo "$pkg/internal/fb is stale: run 'go generate ./$pkg' and commit the result" >&2
	exit 1
fi
echo "$pkg/internal/fb is up to date"
