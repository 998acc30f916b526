#!/usr/bin/env bash
# Regenerates the FlatBuffers Go code of one schema with the pinned flatc. The
# packages' own gen.sh scripts call it (through `go generate`).
#
#   internal/flatc/gen.sh SCHEMA.fbs OUTDIR
#
# writes SCHEMA_generated.go (package fb) into OUTDIR.
#
# Pinned pair, checked to compile and round-trip together (negotiate's and
# protocol's tests):
#   flatc 2.0.8                                     Debian bookworm's flatbuffers-compiler
#   github.com/google/flatbuffers v25.12.19+incompatible   Go runtime, pinned in go.mod
# Another flatc version generates different text, so the check_generated.sh
# scripts would report the committed code as stale: the script insists on
# 2.0.8 (set FLATC to a 2.0.8 binary elsewhere on PATH if needed). flatc is
# installed with apt-get when missing.
set -euo pipefail

schema="$1"
out="$2"
want="2.0.8"
flatc="${FLATC:-flatc}"

if ! command -v "$flatc" >/dev/null 2>&1; then
	echo "flatc/gen.sh: $flatc not found; installing Debian's flatbuffers-compiler" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || { echo "flatc/gen.sh: need root or sudo to apt-get install flatbuffers-compiler" >&2; exit 1; }
		sudo="sudo"
	fi
	command -v apt-get >/dev/null 2>&1 || { echo "flatc/gen.sh: no apt-get; install flatc $want by hand" >&2; exit 1; }
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >&2
	$sudo apt-get install -y -qq flatbuffers-compiler >&2
	flatc=flatc
fi

have=$("$flatc" --version | awk '{print $NF}')
if [ "$have" != "$want" ]; then
	echo "flatc/gen.sh: $flatc is version $have; the committed code comes from flatc $want" >&2
	exit 1
fi

name="$(basename "$schema" .fbs)_generated.go"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$flatc" --go --gen-onefile --go-namespace fb -o "$tmp" "$schema"
# flatc's Go output is not gofmt-clean; CI checks gofmt on every file.
gofmt -w "$tmp/$name"
mv "$tmp/$name" "$out/$name"
