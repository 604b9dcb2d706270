#!/usr/bin/env bash
# The CUDA backend on a real GPU: the CUDA tests without the simulator (with the larger
# shapes of tests/test_cuda.py), a per-kernel timing, then the CondConv benchmark against
# PyTorch CUDA. Results go to OUTDIR. Its timeouts add up to 290 s, so that it can run twice in
# one 15-minute GPU window after the machine's start-up.
#
#   bash benchmarks/gpu_check.sh OUTDIR
set -u
OUTDIR=${1:?usage: gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export NUMBA_ENABLE_CUDASIM=0 MINICOND_CUDA_LARGE=1

# numba-cuda 0.30 registers an overload for np.row_stack, which NumPy 2.5 removed; where that
# pairing is installed, give NumPy the alias back (it was always np.vstack) before Numba loads.
if ! python3 -c "import numpy; numpy.row_stack" 2>/dev/null; then
  shim=$(mktemp -d)
  printf 'import numpy\nnumpy.row_stack = numpy.vstack\n' > "$shim/sitecustomize.py"
  export PYTHONPATH="$shim:$PYTHONPATH"
fi
status=0

{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import numba, numba_cuda, torch, numpy; print('numba', numba.__version__, \
'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$OUTDIR/env.txt"

echo "== CUDA tests on the GPU"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 \
  | tee "$OUTDIR/tests_cuda.log" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
HYPOTHESIS_PROFILE=gpu timeout 120 python3 -m pytest -q -p no:cacheprovider -k cuda \
  --durations=10 \
  --ignore=tests/test_cuda.py tests/ 2>&1 | tee "$OUTDIR/tests_all_cuda.log" | tail -n 25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== per-kernel timings"
timeout 30 python3 benchmarks/_cuda_bench.py --kernels --json "$OUTDIR/kernels.json" 2>&1 \
  | tail -n 12 || status=1

echo "== benchmark"
if [ -f benchmarks/bench_condconv.py ]; then
  bench=(python3 benchmarks/bench_condconv.py --backend cuda)
else
  bench=(python3 benchmarks/_cuda_bench.py)
fi
timeout 80 "${bench[@]}" --json "$OUTDIR/bench_cuda.json" 2>&1 | tee "$OUTDIR/bench.log" \
  | tail -n 14
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
