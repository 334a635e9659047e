#!/usr/bin/env bash
# Set up the environment (scripts/setup.sh) and run live decoding on the built-in default: a
# simulated MEG typing stream on LSL, decoded by the shipped typing-meg-small bundle.
#   scripts/run.sh                    the window (`bci-app gui`) when a display exists, else the
#                                     same session headless (`bci-app run`); where the window
#                                     cannot open (system libraries of Qt missing), `bci-app gui`
#                                     prints the apt line that fixes it and runs headless
#   scripts/run.sh --duration 30      any argument: headless, passed to `bci-app run`
#   scripts/run.sh --headless [ARGS]  headless even with a display
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/setup.sh"
bci_app="$BCI_APP_VENV/bin/bci-app"
if [ "${1:-}" = "--headless" ]; then
  shift
  exec "$bci_app" run "$@"
fi
if [ $# -eq 0 ] && [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec "$bci_app" gui --simulate meg
fi
exec "$bci_app" run "$@"
