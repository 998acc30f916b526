#!/usr/bin/env bash
# Regenerates the FlatBuffers Go code of the RPC control messages (internal/fb)
# from control.fbs. Run through `go generate ./protocol`.
#
#   gen.sh [OUTDIR]   write control_generated.go into OUTDIR (default internal/fb)
#
# Pinned pair, checked to compile and round-trip together (protocol's tests):
#   flatc 2.0.8                                     Debian bookworm's flatbuffers-compiler
#   github.com/google/flatbuffers v25.12.19+incompatible   Go runtime, pinned in go.mod
# Another flatc version generates different text, so check_generated.sh would
# report the committed code as stale: the script insists on 2.0.8 (set FLATC to
# a 2.0.8 binary elsewhere on PATH if needed). flatc is installed with apt-get
# when missing.
set -euo pipefail
cd "$(dirname "$0")"

want="2.0.8"
out="${1:-internal/fb}"
flatc="${FLATC:-flatc}"

if ! command -v "$flatc" >/dev/null 2>&1; then
	echo "gen.sh: $flatc not found; installing Debian's flatbuffers-compiler" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || { echo "gen.sh: need root or sudo to apt-get install flatbuffers-compiler" >&2; exit 1; }
		sudo="sudo"
	fi
	command -v apt-get >/dev/null 2>&1 || { echo "gen.sh: no apt-get; install flatc $want by hand" >&2; exit 1; }
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq >&2
	$sudo apt-get install -y -qq flatbuffers-compiler >&2
	flatc=flatc
fi

have=$("$flatc" --version | awk '{print $NF}')
if [ "$have" != "$want" ]; then
	echo "gen.sh: $flatc is version $have; the committed code comes from flatc $want" >&2
	exit 1
fi

mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$flatc" --go --gen-onefile --go-namespace fb -o "$tmp" control.fbs
# flatc's Go output is not gofmt-clean; CI checks gofmt on every file.
gofmt -w "$tmp/control_generated.go"
mv "$tmp/control_generated.go" "$out/control_generated.go"
