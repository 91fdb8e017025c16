#!/usr/bin/env bash
# CUDA check of Liaison on a GPU machine, from the repository's root with .gpu/ beside it
# (scripts/gpu-check/pack.sh builds it; docs/gpu.md):
#   bash .gpu/run.sh               A: SDK smoke test (the runtime's hello must say cuda),
#                                  B: vitest on the runtime-heavy files, C: benchmarks, D: the demo
#   bash .gpu/run.sh --more        A, then the served-script and example tests
#   bash .gpu/run.sh --final       A, then the CUDA-only pytest cases and `router`, `roundtrip`
#   bash .gpu/run.sh --bench-only  A, C, D
#   bash .gpu/run.sh --profile     A, then router.forward with the runtime under cProfile
#   bash .gpu/run.sh --setup-only  unpack and install only (a dry run of the packaging)
# Logs and a summary go to $OUT. Not `set -e`: each step runs whatever the previous did.
# The default's worst case is about 13 min of timeouts (90 + 230 + 240 + 150 + 150 s).
set -u
REPO=$(pwd)
OUT=${OUT:-$REPO/.gpu/out}
mkdir -p "$OUT"
SUM=$OUT/summary.txt
: > "$SUM"
T0=$(date +%s)
ts() { echo "=== [$(date +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/steps.log"; }
note() { echo "$*" | tee -a "$SUM"; }
# run_step SECONDS LOG CMD...: CMD in its own process group (so a timeout also ends the
# runtimes and workers it started), output to LOG and to our stdout; rc 124 on timeout.
run_step() {
  local t=$1 log=$2; shift 2
  local pgf=/tmp/run_step.pgid; rm -f "$pgf"
  setsid -w bash -c 'echo $$ > '"$pgf"'; exec "$@"' _ "$@" > >(tee "$log") 2>&1 &
  local pid=$!
  local i; for i in 1 2 3 4 5 6 7 8 9 10; do [ -s "$pgf" ] && break; sleep 0.2; done
  local pg; pg=$(cat "$pgf" 2>/dev/null || echo "$pid")
  ( sleep "$t"; touch "$log.timeout"; kill -TERM -- -"$pg"; sleep 10; kill -KILL -- -"$pg" ) >/dev/null 2>&1 &
  local w=$!
  wait "$pid"; local rc=$?
  kill "$w" 2>/dev/null; wait "$w" 2>/dev/null
  kill -KILL -- -"$pg" 2>/dev/null   # leftovers of a step that ended normally
  sleep 1
  if [ -e "$log.timeout" ]; then rm -f "$log.timeout"; rc=124; fi
  return $rc
}

# ---------------------------------------------------------------- setup
ts "setup: unpack node"
mkdir -p /tmp/nodebin
tar -xJf .gpu/node.tar.xz -C /tmp/nodebin --strip-components=1 bin/node; note "unpack node rc=$?"
# `npx tsx ...` is what the example tests and some hardening tests spawn; no npm here, so a shim.
cat > /tmp/nodebin/npx <<EOF
#!/usr/bin/env bash
if [ "\${1:-}" = tsx ]; then shift; exec /tmp/nodebin/node "$REPO/node_modules/tsx/dist/cli.mjs" "\$@"; fi
echo "npx shim (.gpu/run.sh): only 'npx tsx' is available, got: \$*" >&2; exit 127
EOF
chmod +x /tmp/nodebin/npx
export PATH=/tmp/nodebin:$PATH
unset NODE_PATH NODE_OPTIONS

ts "setup: unpack node_modules"
if [ -e node_modules ] && [ ! -e node_modules/.gpu-unpacked ]; then
  note "node_modules exists and is not ours: left as is"   # never clobber a real install
else
  rm -rf node_modules && tar -xJf .gpu/nm.tar.xz && touch node_modules/.gpu-unpacked; note "unpack node_modules rc=$?"
fi

ts "setup: python deps"
PY=${PYTHON:-$(command -v python3)}
mkdir -p /tmp/pylib
if ! "$PY" -c 'import zmq' 2>/dev/null; then
  "$PY" -m pip install --no-index --no-deps --disable-pip-version-check -q --target /tmp/pylib .gpu/wheels/*.whl
  rc=$?
  if [ $rc -ne 0 ]; then  # no pip: a wheel is a zip
    for w in .gpu/wheels/*.whl; do "$PY" -m zipfile -e "$w" /tmp/pylib; done; rc=$?
  fi
  note "pyzmq install rc=$rc"
fi
export PYTHONPATH=$PWD/python-runtime:/tmp/pylib${PYTHONPATH:+:$PYTHONPATH}  # the bench baselines import liaison_runtime
export LIAISON_PYTHON=${LIAISON_PYTHON:-$PY}   # scripts/pyenv.mjs locatePython(): LIAISON_PYTHON wins
# (bridge/launcher.ts runtimeEnv() prepends python-runtime/ to PYTHONPATH itself)

{
  echo "date: $(date -u)"
  echo "node: $(node --version 2>&1)"
  echo "python: $PY"
  nvidia-smi -L 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$PY" - <<'EOF' 2>&1
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("cuda available", torch.cuda.is_available(), "count", torch.cuda.device_count())
if torch.cuda.is_available(): print("device0", torch.cuda.get_device_name(0))
import zmq; print("pyzmq", zmq.__version__, "libzmq", zmq.zmq_version())
import msgpack, numpy; print("msgpack", msgpack.version, "numpy", numpy.__version__)
EOF
  df -h /dev/shm 2>&1 | tail -1
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
node -e "require('zeromq'); console.log('node zeromq ok')" 2>&1 | tee -a "$OUT/env.txt"
PYTHONPATH=python-runtime:$PYTHONPATH "$PY" -c "import liaison_runtime; print('liaison_runtime import ok')" 2>&1 | tee -a "$OUT/env.txt"

MODE=${1:-}
if [ "$MODE" = --setup-only ]; then ts "setup only: stop"; exit 0; fi

# ---------------------------------------------------------------- A: smoke
ts "A: CUDA smoke (Runtime.start, hello, matmul)"
run_step 90 "$OUT/smoke.log" node node_modules/tsx/dist/cli.mjs .gpu/smoke.mts
note "A smoke rc=$? ($(grep -m1 '^device' "$OUT/smoke.log"))"

case "$MODE" in
--profile)
  # the runtime under cProfile (LIAISON_PYTHON names a wrapper; the baselines run under it too)
  mkdir -p /tmp/rtprof
  printf '#!/usr/bin/env bash\nexec %s -m cProfile -o /tmp/rtprof/p-$$.prof "$@"\n' "$PY" > /tmp/pyprof; chmod +x /tmp/pyprof
  ts "P: router.forward with the runtime under cProfile"
  LIAISON_PYTHON=/tmp/pyprof NO_COLOR=1 run_step 150 "$OUT/bench-profiled.log" node node_modules/tsx/dist/cli.mjs bench/run.ts router.forward
  note "P bench rc=$?"
  "$PY" - > "$OUT/profile.txt" 2>&1 <<'PYEOF'
import glob, pstats
for f in glob.glob("/tmp/rtprof/*.prof"):
    s = pstats.Stats(f)
    if not any(k[0].endswith("liaison_runtime/executor.py") for k in s.stats):  # a baseline's
        continue
    print("=====", f)
    s.sort_stats("tottime").print_stats(45)
    s.sort_stats("cumulative").print_stats(60)
PYEOF
  note "P profile rc=$?"
  ;;
--more)
  ts "M: vitest, the served scripts and the examples on CUDA"
  LIAISON_THREADS=2 NO_COLOR=1 run_step 250 "$OUT/vitest-more.log" node node_modules/vitest/vitest.mjs run test/served.test.ts test/serve-callbacks.test.ts test/distill.test.ts test/moe-teacher-student.test.ts test/moe-gpt.test.ts test/demo.test.ts test/examples.test.ts test/kv-compare.test.ts test/code-gpt.test.ts --maxWorkers 9 --reporter=default
  note "M vitest rc=$? | $(grep -E '^ *(Test Files|Tests) ' "$OUT/vitest-more.log" | tr -s ' ' | tr '\n' ' ')"
  ;;
--final)
  ts "F: the CUDA-only pytest cases"
  ( cd python-runtime/tests && timeout 120 "$PY" -m pytest -q -x test_ops.py -k "randperm or topk_frac" ) 2>&1 | tee "$OUT/pytest.log" | tail -3
  note "F pytest rc=${PIPESTATUS[0]}"
  ts "F: bench"
  NO_COLOR=1 run_step 200 "$OUT/bench.log" node node_modules/tsx/dist/cli.mjs bench/run.ts router roundtrip
  note "F bench rc=$?"
  ;;
*)
  if [ "$MODE" != --bench-only ]; then
    # Runtime-heavy files: tensor ops, models (GPT, MoE, KV), routers, trainer, adapters,
    # pruners, momentum, programs. Left to --more: the served scripts and the example-running
    # files. Skipped: bench, group/distributed* (torchrun, 2 ranks), package, pyenv,
    # import-graph (need npm/typescript), adapters-minilm (a PyPI model), python-hatch and
    # weight-hooks-adopted (pythonia).
    ts "B: vitest"
    FILES=(
      test/bridge.test.ts test/bridge-lifetimes.test.ts test/shapes.test.ts test/faults.test.ts
      test/model.test.ts test/program.test.ts test/data.test.ts test/units.test.ts
      test/generation.test.ts test/kv-policies.test.ts
      test/routers.test.ts test/routers-runtime.test.ts test/routers-suite.test.ts test/templates-routers.test.ts
      test/trainer.test.ts test/own-loop.test.ts test/extension-params.test.ts test/hardening-nonfinite.test.ts
      test/adapters.test.ts test/adapters-base.test.ts test/adapters-family.test.ts test/adapters-peft.test.ts test/adapad.test.ts
      test/pruners-imp.test.ts test/pruners-loft.test.ts test/pruners-edge-popup.test.ts test/pruners-masked-neurons.test.ts test/templates-pruners.test.ts
      test/momentum.test.ts test/momentum-equivalence.test.ts test/templates-momentum.test.ts
      test/weight-hooks.test.ts test/weight-hooks-trainer.test.ts test/plugins.test.ts test/conformance.test.ts
    )
    LIAISON_THREADS=${LIAISON_THREADS:-2} NO_COLOR=1 run_step 230 "$OUT/vitest.log" node node_modules/vitest/vitest.mjs run "${FILES[@]}" \
      --maxWorkers 8 --reporter=default --reporter=junit --outputFile.junit="$OUT/junit.xml"
    note "B vitest rc=$? (124 = timed out) | $(grep -E '^ *(Test Files|Tests) ' "$OUT/vitest.log" | tr -s ' ' | tr '\n' ' ')"
  fi
  ts "C: bench"
  NO_COLOR=1 run_step 240 "$OUT/bench.log" node node_modules/tsx/dist/cli.mjs bench/run.ts router adapter.forward kv.decode_long
  note "C bench rc=$? (124 = timed out)"
  # their baselines run on the CPU whatever the runtime's device: the losses must agree, the ratios do not compare
  NO_COLOR=1 run_step 150 "$OUT/bench-cpu-baselines.log" node node_modules/tsx/dist/cli.mjs bench/run.ts sdk.train_step momentum.step
  note "C2 bench rc=$?"
  ts "D: demo"
  NO_COLOR=1 run_step 150 "$OUT/demo.log" node node_modules/tsx/dist/cli.mjs examples/quickstart.ts
  note "D demo rc=$?"
  ;;
esac
ts "done"
note "total $(( $(date +%s) - T0 )) s"
cat "$SUM"
