"""Writes the op reference (docs/ops.md) from the op table itself.

    node scripts/python.mjs -m liaison_runtime.opdoc > docs/ops.md

A test fails when docs/ops.md and the table disagree, so the reference cannot go stale.
"""

from __future__ import annotations

import sys

from .ops import OPS


def _param(p) -> str:
    from .ops.registry import _MISSING

    text = f"`{p.name}`: {p.kind}"
    if p.choices:
        text += f" ({' / '.join(map(str, p.choices))})"
    if p.default is not _MISSING:
        d = p.default
        text += f" = {getattr(d, 'name', None) or _dtype_name(d) or repr(d)}"
    return text


def _dtype_name(d):
    from .ops.registry import DTYPE_NAMES

    try:
        return DTYPE_NAMES.get(d)
    except TypeError:
        return None


def render() -> str:
    by_module: dict[str, list] = {}
    for d in OPS.values():
        by_module.setdefault(d.fn.__module__.rsplit(".", 1)[-1], []).append(d)
    lines = [
        "# Op reference",
        "",
        "Every op the runtime runs, by module, generated from the op table",
        "(`node scripts/python.mjs -m liaison_runtime.opdoc > docs/ops.md`). Arguments are",
        "checked against these declarations before an op runs; `?` marks a parameter that",
        "may be null; a `seed` is an integer from -2^63 to 2^64 - 1 (what torch's generators",
        "take). `upload` and `adopt` are the two special ops of docs/protocol.md §3.",
        "From TypeScript, most ops are `Tensor` or `Runtime` methods; any op is",
        "`rt.call(name, args, kw, outputs)`.",
        "",
        f"{len(OPS)} ops.",
    ]
    for mod in sorted(by_module):
        lines += ["", f"## {mod}", "", "| op | parameters | results | what |", "|---|---|---|---|"]
        for d in sorted(by_module[mod], key=lambda d: d.name):
            params = "<br>".join(_param(p) for p in d.params) or "—"
            outs = {1: "1", 0: "none", -1: "list"}.get(d.outputs, str(d.outputs))
            if d.inplace:
                outs += " (in place)"
            doc = (d.doc.splitlines()[0] if d.doc else "").replace("|", "\\|")
            lines.append(f"| `{d.name}` | {params} | {outs} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
