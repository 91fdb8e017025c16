"""Every op in the op table, called with adversarial but well-typed arguments (op_sweep.py:
zero, negative and huge sizes, NaN and infinities, empty lists, wrong ranks, -1 dims), never
answers E_INTERNAL: a caller's mistake is E_ARG, E_SHAPE, E_DTYPE, E_OOM or E_OP_FAILED. Random
programs made of such calls are defined and replayed too.

The sweep runs in a process of its own with a capped address space, so a size that would
need more memory than the machine has fails at once instead of swapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from liaison_runtime.ops import OPS

SWEEP = Path(__file__).with_name("op_sweep.py")
CALLS = 100  # per op, with a fixed seed: ~18,000 calls in a few seconds
PROGRAMS = 1000  # small random programs defined and run, as a client's traces would be


def test_no_op_answers_a_callers_mistake_with_e_internal():
    out = subprocess.run([sys.executable, str(SWEEP), "--seed", "0", "--calls", str(CALLS), "--programs",
                          str(PROGRAMS)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["calls"] == CALLS * len(OPS) and result["programs"] == PROGRAMS  # every op, each time
    shown = "\n".join(f"{x['op']}{x['args']}: {x['error']}" for x in result["internal"][:20])
    assert result["internal"] == [], f"{len(result['internal'])} calls answered E_INTERNAL:\n{shown}"
    assert result["slow"] == [], f"ops that ran for a minute on tiny inputs: {result['slow'][:5]}"
