#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install everything bci-app needs.
#
# CPU-only machine: onnxruntime + the CPU build of torch. Machine with an NVIDIA GPU (nvidia-smi
# works): onnxruntime-gpu + the CUDA build of torch. Override with BCI_APP_DEVICE=cpu|gpu.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
# As root with apt it also installs the Debian packages bci-app uses (the system libraries of Qt's
# xcb window, espeak-ng, Xvfb); otherwise it prints the apt line. With npm it puts the official
# BIDS validator into .tools/ (for the test that `bci-app convert` writes valid BIDS).
# Usage: source it (`. scripts/setup.sh`) or run it; it leaves the venv path in $BCI_APP_VENV.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BCI_APP_VENV:-$root/.venv}"
py="${PYTHON:-python3}"

"$py" - <<'PYCHECK' || { echo "bci-app needs Python >= 3.10 (set PYTHON=/path/to/python3.x)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 10))
PYCHECK

device="${BCI_APP_DEVICE:-}"
if [ -z "$device" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=gpu; else device=cpu; fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
pip=("$venv/bin/python" -m pip)

stamp="$venv/.bci-app-installed-$device"
want="$(cat "$root/pyproject.toml" "$root/scripts/setup.sh" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import bci_app" 2>/dev/null; then
  echo "[setup] environment up to date ($venv, $device)"
else
  if [ "$device" = gpu ]; then
    # onnxruntime and onnxruntime-gpu share one module name: never have both installed.
    "${pip[@]}" uninstall -y -q onnxruntime >/dev/null 2>&1 || true
    "${pip[@]}" install -q torch
    "${pip[@]}" install -q -e "$root[gpu,train,gui,dev,audio-models]"
  else
    "${pip[@]}" uninstall -y -q onnxruntime-gpu >/dev/null 2>&1 || true
    if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
      # An unpinned torch from PyPI is a multi-GB CUDA build on Linux: take the CPU build, from a
      # local wheel when pip's find-links has one, else from PyTorch's CPU index.
      # torch itself without its dependencies first; the project install below resolves them.
      "${pip[@]}" install -q --no-deps --no-index "torch==${BCI_APP_TORCH_VERSION:-2.13.0}" 2>/dev/null \
        || "${pip[@]}" install -q --no-deps "torch==${BCI_APP_TORCH_VERSION:-2.13.0}" \
             --index-url https://download.pytorch.org/whl/cpu
    fi
    "${pip[@]}" install -q -e "$root[cpu,train,gui,dev,audio-models]"
  fi
  echo "$want" > "$stamp"
  echo "[setup] installed bci-app ($device) into $venv"
fi

# Debian packages: the system libraries Qt's xcb platform plugin links to (the PyQt6 wheel does not
# bring them; without them `bci-app gui` falls back to the terminal session), espeak-ng (real
# speech in the listening simulator; else a documented synthetic envelope) and Xvfb (the test of
# the window on a real X display).
qt_missing="$("$venv/bin/python" "$root/gui/qt_platform.py" 2>/dev/null || true)"
apt_wanted=()
for pkg in $qt_missing; do apt_wanted+=("$pkg"); done
command -v espeak-ng >/dev/null 2>&1 || apt_wanted+=(espeak-ng)
command -v Xvfb >/dev/null 2>&1 || apt_wanted+=(xvfb)
if [ ${#apt_wanted[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian packages: ${apt_wanted[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_wanted[@]}" >/dev/null; } \
      || echo "[setup] could not install ${apt_wanted[*]}; 'bci-app gui' says what is missing" >&2
  else
    [ -z "$qt_missing" ] || echo "[setup] the window needs system libraries: sudo apt-get install -y $qt_missing" >&2
    command -v espeak-ng >/dev/null 2>&1 \
      || echo "[setup] espeak-ng not found; install it (e.g. 'sudo apt-get install espeak-ng') for real speech in the listening simulator" >&2
  fi
fi

# The official BIDS validator (npm package, pinned) in .tools/, when Node.js is there (without it,
# the test that checks `bci-app convert`'s BIDS is skipped and says why).
bids_validator_version="1.15.0"
bids_validator_json="$root/.tools/node_modules/bids-validator/package.json"
if command -v npm >/dev/null 2>&1 \
  && ! grep -q "\"version\": \"$bids_validator_version\"" "$bids_validator_json" 2>/dev/null; then
  echo "[setup] installing bids-validator@$bids_validator_version into .tools/ (npm)"
  npm install --prefix "$root/.tools" --no-audit --no-fund --silent \
    "bids-validator@$bids_validator_version" >/dev/null 2>&1 \
    || echo "[setup] could not install bids-validator; the BIDS validation test is skipped" >&2
fi
export BCI_APP_VENV="$venv"
