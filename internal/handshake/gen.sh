#!/usr/bin/env bash
# Regenerates the FlatBuffers Go code of the handshake (internal/fb) from
# handshake.fbs with the pinned flatc (see internal/flatc/gen.sh). Run through
# `go generate ./internal/handshake`.
#
#   gen.sh [OUTDIR]   write handshake_generated.go into OUTDIR (default internal/fb)
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../flatc/gen.sh handshake.fbs "${1:-internal/fb}"
