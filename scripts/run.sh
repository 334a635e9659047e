#!/usr/bin/env bash
# Set up the environment (scripts/setup.sh) and run live decoding on the built-in default: a
# simulated MEG typing stream on LSL. Extra arguments go to `bci-app run`, e.g. `--duration 30`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/setup.sh"
exec "$BCI_APP_VENV/bin/bci-app" run "$@"
