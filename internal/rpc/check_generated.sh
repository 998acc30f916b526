#!/usr/bin/env bash
# Fails when internal/rpc/internal/fb is stale (see internal/flatc/check.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash internal/flatc/check.sh internal/rpc control.fbs
