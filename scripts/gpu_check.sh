#!/usr/bin/env bash
# Every GPU check of bci-app in one run (<= 8 min on an H200); JSON and logs under $OUT.
#
#   bash scripts/gpu_check.sh              # on the GPU machine: the checks below
#   bash scripts/gpu_check.sh --dry-run    # here, on the CPU: the same steps at tiny sizes
#   bash scripts/gpu_check.sh --prepare    # here (PyPI reachable): what the GPU machine lacks
#   bash scripts/gpu_check.sh --part N     # on the GPU machine: receive part N of onnxruntime-gpu
#
# What runs, each step with its own time limit, each writing $OUT/<step>.json or .log:
#   env.json        nvidia-smi, torch (CUDA build?), onnxruntime, its providers, and the provider
#                   a session really gets (CUDA, TensorRT) on the shipped keystroke graph
#   gpu_tests.log   pytest -m gpu (tests/test_gpu_path.py): CUDA == CPU outputs, CUDA graphs,
#                   TensorRT engine cache, decoded text CUDA == CPU (small and paper), 100k
#                   candidates scored on the GPU, bf16 + torch.compile training, NCCL DDP
#   bench.json      bci-app bench --provider auto --config small paper --json: keystroke and
#                   sentence graphs per provider, fp32/fp16, CUDA graphs, torch eager/bf16/
#                   compile, live pipeline stage latencies (small trained + paper untrained)
#   scoring.json    100k-candidate similarity on the GPU: p50/p99 per window
#   training.json   scripts/bench_training.py: keystrokes/s, small and paper, bf16 (+ compile)
#   summary.log     each step's exit status and seconds
#
# The GPU machine reaches no package registry. Its image has a CUDA torch, numpy, scipy,
# matplotlib, onnx and the CPU onnxruntime; what bci-app also needs is carried from here:
#   1. here:  bash scripts/gpu_check.sh --prepare   (makes .dev/p0.. = onnxruntime-gpu in parts
#             of <= 52 MB, and .dev/whl = pylsl, mne, pyxdf, ... wheels for Python 3.12;
#             .dev/ is git-ignored (.gitignore))
#   2. device, back to back (a machine stays warm ~30 s between calls), one call per part:
#        carry [".dev/p0"]  command: bash scripts/gpu_check.sh --part 0
#        carry [".dev/p1"]  command: bash scripts/gpu_check.sh --part 1
#        carry [".dev/p2"]  command: bash scripts/gpu_check.sh --part 2
#        carry [".dev/p3", ".dev/whl"]  command: bash scripts/gpu_check.sh --part 3 && bash scripts/gpu_check.sh
#      (timeout_s 560 for the last one). The script finds onnxruntime-gpu in /root/ortpkg and the
#      wheels in /tmp/site and puts them first on PYTHONPATH; ort.preload_dlls() loads CUDA's
#      libraries from torch's wheels.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mode="${1:-run}"
OUT="${OUT:-/tmp/gpu_check_out}"
py="${PYTHON:-python3}"
[ -x "$root/.venv/bin/python" ] && [ "$mode" = --dry-run ] && py="$root/.venv/bin/python"

# Packages bci-app's checks import that the GPU image lacks (with their own needs), pinned to
# what the project's CPU environment runs.
WHEELS="mne==1.13.2 pyxdf==1.17.5 edfio==0.4.18 pybv==0.8.1 decorator==5.3.1 pooch==1.9.0 \
platformdirs==4.14.9"
LSL_WHEEL="pylsl==1.18.6" # its Linux wheel (manylinux_2_35) carries liblsl; the 'any' one does not

case "$mode" in
--prepare)
  set -e
  bash "$root/../shared/tools/ort-gpu-parts"
  rm -rf .dev/whl && mkdir -p .dev/whl
  get=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
    --implementation cp -d .dev/whl)
  # shellcheck disable=SC2086
  "${get[@]}" --platform any $WHEELS
  "${get[@]}" --platform manylinux_2_35_x86_64 "$LSL_WHEEL"
  du -sh .dev/p* .dev/whl
  exit 0
  ;;
--part)
  part="${2:?--part needs the part number}"
  mkdir -p /root/ortp && cp .dev/p"$part"/* /root/ortp/
  ls -la /root/ortp
  exit 0
  ;;
run | --dry-run) mkdir -p "$OUT" ;;
*)
  echo "usage: bash scripts/gpu_check.sh [--dry-run | --prepare | --part N]" >&2
  exit 2
  ;;
esac

# ------------------------------------------------------------------ environment of the run
if [ "$mode" = run ]; then
  if [ ! -d /root/ortpkg/onnxruntime ] && ls /root/ortp/ort.part.* >/dev/null 2>&1; then
    mkdir -p /root/ortpkg && cat /root/ortp/ort.part.* | tar xJ -C /root/ortpkg
  fi
  [ -d /root/ortpkg/onnxruntime ] && export PYTHONPATH="/root/ortpkg${PYTHONPATH:+:$PYTHONPATH}"
  if ls .dev/whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .dev/whl/*.whl
  fi
  [ -d /tmp/site ] && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 QT_QPA_PLATFORM=offscreen
export BCI_APP_CACHE="${BCI_APP_CACHE:-$OUT/../bci-app-cache}"
# onnxruntime-gpu finds CUDA/cuDNN in torch's wheels once preloaded (sitecustomize runs first)
mkdir -p /tmp/gpu_check_site
cat >/tmp/gpu_check_site/sitecustomize.py <<'PY'
try:
    import onnxruntime as _ort

    if hasattr(_ort, "preload_dlls") and "CUDAExecutionProvider" in _ort.get_available_providers():
        _ort.preload_dlls()
except Exception:  # the checks report what is missing
    pass
PY
export PYTHONPATH="/tmp/gpu_check_site:$PYTHONPATH"

summary="$OUT/summary.log"
: >"$summary"
step() { # step NAME LIMIT_S COMMAND...: run with a time limit, record status and seconds
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "$name rc=$rc seconds=$(($(date +%s) - start))" | tee -a "$summary"
}

if [ "$mode" = run ]; then
  providers="auto"
  configs="small paper"
  bench_args=(--seconds 30 --realtime-seconds 10 --max-seconds 30 --repeats 300)
  train_args=(--configs small paper --device cuda --precision bf16)
  compile_args=(--configs paper --device cuda --precision bf16 --compile --steps 10)
  limits=(30 120 200 20 50 50) # 470 s at most, + ~20 s unpacking onnxruntime-gpu
  export SCORING_CANDIDATES=100000
else
  providers="cpu"
  configs="small"
  bench_args=(--seconds 20 --realtime-seconds 0 --max-seconds 20 --repeats 10 --no-compile)
  train_args=(--configs small --device cpu --steps 1 --batch-size 2 --keys 4)
  compile_args=()
  limits=(60 120 240 60 120 0)
  export SCORING_CANDIDATES=5000
fi

step env "${limits[0]}" "$py" - >"$OUT/env.json" 2>"$OUT/env.err" <<'PY'
import json, shutil, subprocess, sys

info = {"python": sys.version.split()[0]}
if shutil.which("nvidia-smi"):
    query = "name,driver_version,memory.total,clocks.max.sm"
    done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                          capture_output=True, text=True)
    info["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
try:
    import torch
    info["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                     "available": torch.cuda.is_available(),
                     "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
except ImportError as err:
    info["torch"] = str(err)
import onnxruntime as ort
from bci_app.decoders.runtime import OnnxRuntime
from bci_app.decoders.shipped import TYPING_BUNDLE
info["onnxruntime"] = {"version": ort.__version__, "file": ort.__file__,
                       "available": ort.get_available_providers()}
graph = TYPING_BUNDLE / "keystroke.onnx"
for provider in ("cpu", "cuda", "tensorrt"):
    try:
        rt = OnnxRuntime(graph, provider)
        info[f"session_{provider}"] = list(rt.session.get_providers())
    except Exception as err:
        info[f"session_{provider}"] = f"{type(err).__name__}: {err}"[:400]
print(json.dumps(info, indent=2))
PY

# The image's newer numpy/torch may deprecate what ours do not: such warnings are not GPU faults.
step gpu_tests "${limits[1]}" "$py" -m pytest -p no:cacheprovider -q -m gpu -rs \
  -W ignore::DeprecationWarning -W ignore::FutureWarning \
  tests/test_gpu_path.py >"$OUT/gpu_tests.log" 2>&1

# shellcheck disable=SC2086
step bench "${limits[2]}" "$py" -m bci_app.cli.main bench --provider "$providers" \
  --config $configs "${bench_args[@]}" --json >"$OUT/bench.json" 2>"$OUT/bench.err"

step scoring "${limits[3]}" "$py" - >"$OUT/scoring.json" 2>>"$OUT/bench.err" <<'PY'
import json, os, time
import numpy as np
from bci_app.speech.decoder import normalize
from bci_app.speech.scoring import CandidateScorer

rng = np.random.default_rng(0)
n = int(os.environ["SCORING_CANDIDATES"])
candidates = normalize(rng.standard_normal((n, 1024)).astype(np.float32))
query = normalize(rng.standard_normal((1, 1024)).astype(np.float32))
out = {"n_candidates": len(candidates), "dim": 1024}
for device in ("auto", "cpu"):
    scorer = CandidateScorer(candidates, top_k=10, device=device)
    times = []
    for _ in range(220):
        t0 = time.perf_counter()
        scorer.top(query)
        times.append(time.perf_counter() - t0)
    p50, p99 = np.percentile(np.array(times[20:]) * 1e3, [50, 99])
    out[device] = {"device": scorer.device, "p50_ms": float(p50), "p99_ms": float(p99)}
print(json.dumps(out, indent=2))
PY

step training "${limits[4]}" "$py" scripts/bench_training.py "${train_args[@]}" --json \
  >"$OUT/training.json" 2>"$OUT/training.err"
if [ ${#compile_args[@]} -gt 0 ]; then
  step training_compile "${limits[5]}" "$py" scripts/bench_training.py "${compile_args[@]}" \
    --json >"$OUT/training_compile.json" 2>>"$OUT/training.err"
fi
# stderr files are folded into one log (at most 8 files come back from $OUT)
for f in env bench training; do
  [ -s "$OUT/$f.err" ] && { echo "== $f"; tail -n 60 "$OUT/$f.err"; } >>"$OUT/errors.log"
  rm -f "$OUT/$f.err"
done
cat "$summary"
