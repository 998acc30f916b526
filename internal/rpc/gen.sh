#!/usr/bin/env bash
# Regenerates the FlatBuffers Go code of the RPC control messages (internal/fb) from
# control.fbs with the pinned flatc (see internal/flatc/gen.sh). Run through
# `go generate ./internal/rpc`.
#
#   gen.sh [OUTDIR]   write control_generated.go into OUTDIR (default internal/fb)
set -euo pipefail
cd "$(dirname "$0")"
exec bash ../flatc/gen.sh control.fbs "${1:-internal/fb}"
