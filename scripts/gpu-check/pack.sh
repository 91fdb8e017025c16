#!/usr/bin/env bash
# Builds .gpu/ (git ignores it) for a CUDA check on a GPU machine that has Python, torch and
# CUDA but no Node, no pyzmq and no network (this workplace's `device` machines):
#   node.tar.xz  this machine's node binary;
#   nm.tar.xz    node_modules without what the check does not run (the TypeScript compiler,
#                tsup's bundlers, type declarations, zeromq's builds for other platforms);
#   wheels/      pyzmq for CPython 3.12 on x86-64 Linux (the GPU image's Python);
#   run.sh, smoke.mts  the check itself (scripts/gpu-check/run.sh says what it runs).
# Then, on the GPU machine, from the repository's root: `bash .gpu/run.sh [MODE]` (its header lists
# the modes), with `.gpu` carried; its logs come back in $OUT. docs/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d node_modules ] || { echo "run npm install first" >&2; exit 1; }
rm -rf .gpu && mkdir -p .gpu/wheels
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" && cp "$(command -v node)" "$tmp/bin/node" && (strip "$tmp/bin/node" 2>/dev/null || true)
XZ_OPT=-9 nice tar -C "$tmp" -cJf .gpu/node.tar.xz bin/node
ex=(typescript tsup rollup @rollup sucrase @types esbuild @esbuild lightningcss-linux-x64-gnu
    zeromq/src zeromq/script zeromq/build/darwin zeromq/build/win32 zeromq/build/linux/arm64)
args=(); for e in "${ex[@]}"; do args+=(--exclude="node_modules/$e"); done
XZ_OPT=-9 nice tar -cJf .gpu/nm.tar.xz --anchored "${args[@]}" --no-anchored --exclude='*.map' --exclude='*.md' --exclude='*.d.ts' \
  --exclude='*.d.mts' --exclude='*.d.cts' node_modules
python=${LIAISON_PYTHON:-.venv/bin/python}
"$python" -m pip download -q pyzmq --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --no-deps -d .gpu/wheels
cp scripts/gpu-check/run.sh scripts/gpu-check/smoke.mts .gpu/
du -sh .gpu
