#!/usr/bin/env bash
# Set up the environment (scripts/setup.sh) and run the test suite. Extra arguments go to pytest,
# e.g. `scripts/test.sh -m "not slow"` or `scripts/test.sh tests/acquisition -x`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/scripts/setup.sh"
cd "$root"
export QT_QPA_PLATFORM=offscreen
"$BCI_APP_VENV/bin/ruff" check acquisition bci_app models gui tests scripts
"$BCI_APP_VENV/bin/ruff" format --check acquisition bci_app models gui tests scripts
exec "$BCI_APP_VENV/bin/python" -m pytest "$@"
