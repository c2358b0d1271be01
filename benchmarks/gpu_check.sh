#!/usr/bin/env bash
# One-command check of the CUDA path, written for the `device` tool's GPU machine (Python 3.12 with its own CUDA
# build of torch; numpy, scipy, imageio, rich, pytest, scikit-image and Pillow are there, Taichi is not).
#
#   bash benchmarks/gpu_check.sh --prepare     here, once: downloads the Taichi 1.7.4 and dill wheels for
#                                             Python 3.12 into .whl/ (git-ignored, about 56 MB)
#   bash benchmarks/gpu_check.sh [--quick]     there (device run with carry [".whl"]; --quick: tests and smoke
#                                             runs only, no benchmarks): installs the wheels,
#                                             then runs, each step with its own time limit:
#     1. every op test, the checks, backend and bad-input tests, then the fitting and training tests, on cuda
#        (MOFA_TK_TEST_BACKENDS=cuda; MediaPipe is not installed there, so detection tests skip);
#     2. smoke runs: the decoder forward + backward, a fit of a synthetic photo, 20 training steps, on cuda;
#     3. benchmarks/bench_raster.py, bench_decoder.py and bench_train.py with --backend cuda.
# Results go to $OUT (the device tool's output folder; gpu_check_out/ elsewhere): summary.md with the test counts,
# failures and benchmark tables, and logs.tar.gz with one log per step.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl taichi==1.7.4 dill
    ls -la .whl
    exit 0
fi

OUT="${OUT:-gpu_check_out}"
LOGS=/tmp/gpu_check_logs        # one log per step, returned as $OUT/logs.tar.gz (the device tool returns 8 files)
mkdir -p "$OUT" "$LOGS"
SUMMARY="$OUT/summary.md"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed" | tee "$SUMMARY"; exit 1; }
fi
# mofa_tk installed as a user would (not the checkout on PYTHONPATH: a test checks that `kernels` is not a
# top-level module outside the checkout); pytest and the scripts still import the checkout itself
export PYTHONPATH="/tmp/site"
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site . > "$LOGS/install.log" 2>&1 \
    || { echo "mofa_tk install failed (install.log): the checkout is on PYTHONPATH" >> "$LOGS/status.txt"
         export PYTHONPATH="/tmp/site:$PWD"; }
export PYTHONUNBUFFERED=1 MOFA_TK_BACKEND=cuda MOFA_TK_TEST_BACKENDS=cuda MOFA_TK_REQUIRE_BACKENDS=cuda

{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
    python3 -c "import sys, torch, taichi, numpy; print('python', sys.version.split()[0], '| torch', torch.__version__, '| taichi', taichi.__version__, '| numpy', numpy.__version__)" 2>&1 | tail -1
    python3 -c "import mofa_tk; print('mofa_tk.init:', mofa_tk.init('cuda'))" 2>&1 | tail -1
    echo '```'
} > "$SUMMARY"
# Stop at once (and cheaply) when Taichi's CUDA backend does not start: nothing below can run without it.
if ! python3 -c "import mofa_tk, sys; sys.exit(mofa_tk.init('cuda') != 'cuda')" > "$LOGS/init.log" 2>&1; then
    { echo; echo "## Taichi's CUDA backend did not start"; echo '```'; tail -30 "$LOGS/init.log"; echo '```'; } >> "$SUMMARY"
    tar czf "$OUT/logs.tar.gz" -C "$LOGS" .
cat "$SUMMARY"
    exit 2
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record the exit status
    local name=$1 limit=$2
    shift 2
    echo "== $name" >&2
    timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc$( [ $rc = 124 ] && echo ' (time limit)')" >> "$LOGS/status.txt"
    return 0
}

step tests 150 python3 -m pytest -q -p no:cacheprovider --durations=10 tests/ops tests/face tests/test_checks.py tests/test_backend.py \
    tests/test_bad_input.py tests/test_camera.py tests/test_mesh.py tests/test_launch.py
step tests_fit_train 120 python3 -m pytest -q -p no:cacheprovider --durations=10 tests/fitting tests/training tests/test_losses.py
step smoke 45 python3 - <<'EOF'
import sys, time
import numpy as np, torch
sys.path.insert(0, "tests")
import mofa_tk
from fit_scenes import synthetic_scene
assert mofa_tk.init("cuda") == "cuda"
model = mofa_tk.builtin_model()
dec = mofa_tk.FaceDecoder(model.to("cuda"), 224).cuda()
code = dec.code.zeros(4).cuda().requires_grad_(True)
out = dec(code)
out.image.sum().backward()
torch.cuda.synchronize()
print("decoder forward + backward on cuda: image", tuple(out.image.shape), "grad finite", bool(torch.isfinite(code.grad).all()))
sc = synthetic_scene(model, 3)
t = time.perf_counter()
res = mofa_tk.fit(sc["image"], model, landmarks=sc["landmarks"], progress=False, focal=sc["focal"], principal=sc["principal"])
print(f"fit on cuda: {time.perf_counter() - t:.2f} s, loss {res.losses['photometric']['final']:.4g}, iterations {res.iterations}")
EOF
QUICK=$( [ "${1:-}" = "--quick" ] && echo 1 || echo 0 )
[ $QUICK = 1 ] || step bench_raster 60 python3 benchmarks/bench_raster.py --backend cuda --repeats 20
[ $QUICK = 1 ] || step bench_decoder 70 python3 benchmarks/bench_decoder.py --backend cuda --batches 1,8,32
step train 45 python3 examples/train_autoencoder.py --device cuda --steps 20 --eval-every 10 --heldout 16 --out /tmp/gpu_train
[ $QUICK = 1 ] || step bench_train 60 python3 benchmarks/bench_train.py --backend cuda --repeats 3

{
    echo
    echo "## Steps"
    echo '```'
    cat "$LOGS/status.txt"
    echo '```'
    echo
    for f in tests tests_fit_train; do
        echo
        echo "## $f on cuda"
        echo '```'
        grep -E "passed|failed|error" "$LOGS/$f.log" | tail -1
        grep -E "^(FAILED|ERROR)" "$LOGS/$f.log" | head -20
        grep -E "^E  " "$LOGS/$f.log" | head -20
        echo '```'
    done
    for f in smoke bench_raster bench_decoder train bench_train; do
        [ -f "$LOGS/$f.log" ] || continue
        echo
        echo "## $f"
        echo '```'
        grep -v '^\[Taichi\]' "$LOGS/$f.log" | tail -20
        echo '```'
    done
} >> "$SUMMARY"
tar czf "$OUT/logs.tar.gz" -C "$LOGS" .
cat "$SUMMARY"
