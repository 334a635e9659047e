#!/usr/bin/env bash
# Set up the environment (scripts/setup.sh) and run live decoding on the built-in default: a
# simulated MEG typing stream on LSL, decoded by the shipped typing-meg-small bundle.
#   scripts/run.sh                    the window (`bci-app gui`) when a display exists and PyQt6
#                                     imports; otherwise the same session headless (`bci-app run`)
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
if [ $# -eq 0 ] && [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] \
  && "$BCI_APP_VENV/bin/python" -c "import PyQt6.QtWidgets" >/dev/null 2>&1; then
  exec "$bci_app" gui --simulate meg
fi
exec "$bci_app" run "$@"
