#!/usr/bin/env bash
# Run every benchmark briefly and print each one's figures under the command that produced them,
# with the date, the cores and the load before and after, so docs/BENCHMARKS.md can be refreshed
# from one run. The figures are what the scripts print; nothing here computes or edits them.
#
# Usage: scripts/bench_all.sh [--training] | tee out/benchmarks.txt
#   default     the latency and throughput benchmarks (~6 min on 2 cores)
#   --training  also the ones that train decoders (typing, speech, drift: ~30 more minutes)
# BCI_APP_VENV picks the virtual environment (default .venv). A benchmark that fails prints its
# exit code and the run goes on to the next one.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${BCI_APP_VENV:-$root/.venv}"
py="$venv/bin/python"
training=0
for arg in "$@"; do
  case "$arg" in
    --training) training=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "Invalid argument '$arg': use --training or nothing." >&2; exit 2 ;;
  esac
done
if [ ! -x "$py" ]; then
  echo "No Python at $py: run scripts/setup.sh first (or set BCI_APP_VENV)." >&2
  exit 2
fi
cd "$root" || exit 2
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"

load() { cut -d' ' -f1-3 /proc/loadavg; }

bench() {
  echo "### \$ $*"
  echo "date $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load (1/5/15 min) before: $(load)"
  local started=$SECONDS
  # Qt's offscreen plugin, liblsl, the exporter and INFO logs print noise; keep the figures.
  "$@" 2>&1 | grep -v -E -e 'propagateSizeHints' -e ' INFO[| ]' -e '^W[0-9]{4} .*torchvision'
  local rc=${PIPESTATUS[0]}
  echo "exit $rc after $((SECONDS - started)) s, load after: $(load)"
  echo
}

echo "bci-app benchmarks, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
  "(+ uncommitted changes: $(git status --porcelain 2>/dev/null | wc -l) files)"
echo "$(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo

bench "$venv/bin/bci-app" bench --seconds 120 --realtime-seconds 30 --max-seconds 120
bench "$py" scripts/bench_acquisition.py --peers --duration 20
bench "$py" scripts/bench_acquisition.py --duration 20
bench "$py" scripts/bench_gui.py --seconds 10 --channels 64 306 --views channels butterfly all --decode
bench "$py" scripts/bench_gui.py --seconds 10 --channels 306 --views channels --decode \
  --default-switch-interval
bench "$py" scripts/bench_preprocessing.py --seconds 20 --minutes 2
bench "$py" scripts/bench_replay.py --minutes 2
bench "$py" scripts/bench_simulator.py --duration 20 --decode-duration 120
if [ "$training" = 1 ]; then
  bench "$py" scripts/bench_typing.py --quick
  bench "$py" scripts/bench_speech.py --quick
  bench "$py" scripts/bench_drift.py --duration 120
fi
