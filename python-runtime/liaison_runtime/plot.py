"""Line plots as PNG, for the SDK's examples and demo (sdk/plot.ts spawns this).

    echo '{"path": "loss.png", "title": "…", "series": [{"label": "train", "x": [...], "y": [...]}]}' \\
        | python -m liaison_runtime.plot

Fields: path (required), series (required: label, x, y; optional style like "--" and
panel index), title, xlabel, ylabel, logx, logy, invertx (x decreasing to the right), panels
(titles of side-by-side panels).
matplotlib renders off-screen (Agg); it is an optional dependency of the runtime.
"""

from __future__ import annotations

import json
import sys


def plot(spec: dict) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # a clear message beats a traceback for a missing extra
        raise SystemExit(f"plotting needs matplotlib in the runtime's Python ({e}); a checkout's `npm install` "
                         "installs it; where liaison is a dependency, `LIAISON_EXTRAS=plot npm rebuild liaison` "
                         "adds it to the shared environment; or pip install matplotlib") from None
    path = spec.get("path")
    series = spec.get("series")
    if not isinstance(path, str) or not isinstance(series, list) or not series:
        raise SystemExit("plot spec needs 'path' (a string) and 'series' (a non-empty list)")
    panels = spec.get("panels") or [spec.get("title", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.set_title(panels[i] if len(panels) > 1 else spec.get("title", ""))
        ax.set_xlabel(spec.get("xlabel", ""))
        ax.set_ylabel(spec.get("ylabel", ""))
        if spec.get("logx"):
            from matplotlib.ticker import FuncFormatter, LogLocator

            ax.set_xscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")  # 50, not 5 x 10^1
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain)
            xs = [x for s in series if s.get("x") for x in s["x"] if isinstance(x, (int, float)) and x > 0]
            if xs and max(xs) / min(xs) > 10:  # over a decade, 2 and 5 between the powers of ten, not every digit
                ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        if spec.get("logy"):
            ax.set_yscale("log")
        if spec.get("invertx"):
            ax.invert_xaxis()
        ax.grid(True, alpha=0.3)
    for s in series:
        ax = axes[0][int(s.get("panel", 0))]
        x, y = s.get("x"), s.get("y")
        if not isinstance(y, list) or (x is not None and len(x) != len(y)):
            raise SystemExit(f"series {s.get('label')!r}: 'y' must be a list and 'x' as long as it")
        ax.plot(x if x is not None else range(len(y)), y, s.get("style", "-"), label=s.get("label"), linewidth=1.5)
    for ax in axes[0]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(plot(json.load(sys.stdin)))
