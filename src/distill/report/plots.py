"""Figures of a run, as PNG bytes, and its curves as TensorBoard event files.

Every figure is a fresh :class:`matplotlib.figure.Figure` drawn on its own Agg
canvas: pyplot is never imported, so no global figure state exists to leak
between calls, and nothing needs a display. Each function returns the PNG bytes
and lets the figure go (it is cleared before returning).

Inputs are plain Python/NumPy values (the report module reads the run
directory); shapes are in each docstring.
"""

from __future__ import annotations

import base64
import io
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROLE_COLOURS = {"teacher": "#4c72b0", "baseline": "#999999", "student": "#dd8452"}
ROLE_NAMES = {"teacher": "teacher", "baseline": "student, hard labels", "student": "student, distilled"}
_DPI = 110


# ---------------------------------------------------------------- helpers
def new_figure(width: float, height: float) -> Any:
    """A fresh matplotlib Figure on its own Agg canvas (pyplot is never imported)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any) -> bytes:
    """The PNG bytes of ``fig`` (which is cleared)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    fig.clear()
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for embedding ``png`` in an HTML page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _style(ax: Any) -> None:
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _role_name(role: str) -> str:
    return ROLE_NAMES.get(role, role)


def _colour(role: str, i: int) -> str:
    return ROLE_COLOURS.get(role, f"C{i % 10}")


def _tick_fontsize(n: int) -> float:
    return 9 if n <= 12 else max(5.0, 9 - (n - 12) / 6)


# ---------------------------------------------------------- training curves
def curve_panels(histories: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The per-epoch keys drawn as panels: ``loss``, each ``loss/<term>``, ``val_acc`` (those present)."""
    keys: list[str] = []
    for hist in histories.values():
        for row in hist:
            for k in row:
                if (k == "loss" or k.startswith("loss/") or k == "val_acc") and k not in keys:
                    keys.append(k)
    terms = sorted(k for k in keys if k.startswith("loss/"))
    return [k for k in ("loss",) if k in keys] + terms + [k for k in ("val_acc",) if k in keys]


def _panel_title(key: str) -> str:
    if key == "loss":
        return "total loss (weighted sum)"
    if key == "val_acc":
        return "validation accuracy"
    return f"loss term: {key.split('/', 1)[1]}"


def training_curves(histories: dict[str, list[dict[str, Any]]]) -> bytes:
    """One panel per loss term and one for validation accuracy; one line per role.

    ``histories``: role -> per-epoch dicts (``epoch``, ``loss``, ``loss/<term>``, ``val_acc``, ...).
    Roles with an empty history are skipped. Loss panels use a log y-axis when their values are positive and span more than a decade.
    """
    from matplotlib.ticker import MaxNLocator

    histories = {r: h for r, h in histories.items() if h}
    panels = curve_panels(histories)
    if not panels:
        raise ValueError("no per-epoch curves to draw")
    ncols = 2 if len(panels) in (2, 4) else min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.1 * ncols, 3.0 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, key in zip(axes, panels):
        _style(ax)
        lo_y, hi_y = math.inf, -math.inf
        for i, (role, hist) in enumerate(histories.items()):
            pts = [(r["epoch"], r[key]) for r in hist if r.get(key) is not None and math.isfinite(r[key])]
            if not pts:
                continue
            xs, ys = zip(*pts)
            lo_y, hi_y = min(lo_y, *ys), max(hi_y, *ys)
            ys_plot = [100 * y for y in ys] if key == "val_acc" else ys
            ax.plot(xs, ys_plot, color=_colour(role, i), label=_role_name(role), linewidth=1.6,
                    marker="o" if len(xs) <= 12 else None, markersize=3)  # fmt: skip
        if key != "val_acc" and lo_y > 0 and hi_y / lo_y > 10:
            ax.set_yscale("log")
        ax.set_title(_panel_title(key), fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel("accuracy (%)" if key == "val_acc" else "loss", fontsize=9)
        ax.tick_params(which="both", labelsize=8)
        ax.legend(fontsize=8, frameon=False)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    return figure_png(fig)


# ------------------------------------------------------ quality vs latency
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower x = latency, higher y = quality),
    ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _label_offsets(frac: list[tuple[float, float]], min_dx: float = 0.22, min_dy: float = 0.06) -> list[float]:
    """Vertical offsets (points) that keep labels at nearby axes-fraction positions ``frac`` apart."""
    placed: list[tuple[float, float]] = []
    offsets = []
    for fx, fy in frac:
        off = 6.0
        while any(abs(fx - px) < min_dx and abs(fy + off / 280 - py) < min_dy for px, py in placed):
            off -= 13.0
        placed.append((fx, fy + off / 280))
        offsets.append(off)
    return offsets


def quality_vs_latency(models: list[dict[str, Any]]) -> bytes:
    """Every model as a point: test accuracy against batch-1 latency (p50, log x), p50–p95 as a bar.

    ``models``: dicts with ``role``, ``label``, ``test_acc`` (0..1), ``cost.latency_ms_p50`` and
    optionally ``cost.latency_ms_p95`` and ``cost.parameters``. The Pareto front is drawn as a step line.
    The baseline is drawn as a ring, so that it stays visible when the distilled student sits on it.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    pts = [(float(m["cost"]["latency_ms_p50"]), 100 * float(m["test_acc"])) for m in models]
    fig = new_figure(6.6, 4.0)
    ax = fig.subplots()
    _style(ax)
    ax.grid(True, which="minor", color="#f2f2f2", linewidth=0.6)
    xs = [p[0] for p in pts] + [m["cost"].get("latency_ms_p95") or p[0] for m, p in zip(models, pts)]
    lo, hi = min(xs), max(xs)
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.8, hi * 3.0)
    ys = [p[1] for p in pts]
    pad = max(0.5, 0.25 * (max(ys) - min(ys)))
    ylo, yhi = min(ys) - pad, min(100.0 + pad / 4, max(ys) + pad)
    ax.set_ylim(ylo, yhi)
    front = pareto_front(pts)
    if len(front) > 1:
        fx = [pts[i][0] for i in front]
        fy = [pts[i][1] for i in front]
        ax.step(fx, fy, where="post", color="#bbbbbb", linestyle="--", linewidth=1.2, label="Pareto front", zorder=1)
    lx0, lx1 = math.log10(lo / 1.8), math.log10(hi * 3.0)
    frac = [((math.log10(x) - lx0) / (lx1 - lx0), (y - ylo) / (yhi - ylo)) for x, y in pts]
    order = sorted(range(len(pts)), key=lambda i: -pts[i][1])
    offs = dict(zip(order, _label_offsets([frac[i] for i in order])))
    for i, (m, (x, y)) in enumerate(zip(models, pts)):
        colour = _colour(m["role"], i)
        p95 = m["cost"].get("latency_ms_p95")
        if p95 and p95 > x:
            ax.plot([x, p95], [y, y], color=colour, linewidth=2.5, alpha=0.35, solid_capstyle="butt", zorder=2)
        params = m["cost"].get("parameters")
        size = 40 + 160 * (math.log10(params) / 9 if params else 0.3)
        if m["role"] == "baseline":
            ax.scatter([x], [y], s=size * 2.2, facecolor="none", edgecolor=colour, linewidth=2.0, zorder=4,
                       label=m["label"])  # fmt: skip
        else:
            ax.scatter([x], [y], s=size, color=colour, edgecolor="white", linewidth=1.2, zorder=3, label=m["label"])
        ax.annotate(m["label"], (x, y), textcoords="offset points", xytext=(10, offs[i]), fontsize=8.5,
                    color="#333333", va="bottom" if offs[i] > 0 else "top")  # fmt: skip
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if lx1 - lx0 < 1.6:  # less than ~1.5 decades shown: label the 2× and 5× minor ticks too

        def minor(v: float, _: Any) -> str:
            lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
            return f"{v:g}" if lead in (2.0, 5.0) else ""

        ax.xaxis.set_minor_formatter(FuncFormatter(minor))
    else:
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency, batch 1, p50 (ms, log scale; bar to p95)", fontsize=9)
    ax.set_ylabel("test accuracy (%)", fontsize=9)
    ax.set_title("quality vs latency (up and to the left is better)", fontsize=10)
    ax.tick_params(which="both", labelsize=8)
    ax.legend(fontsize=8, frameon=False, loc="lower right", markerscale=0.7)
    return figure_png(fig)


# ------------------------------------------------------------ per-class
def per_class_bars(class_names: Sequence[str], accuracies: dict[str, np.ndarray]) -> bytes:
    """Grouped bars of per-class test accuracy. ``accuracies``: role -> (C,) values in 0..1 (NaN = no sample)."""
    n = len(class_names)
    roles = list(accuracies)
    width = 0.8 / max(1, len(roles))
    fig = new_figure(min(16.0, max(6.4, 0.55 * n * max(1, len(roles)) / 2 + 2)), 3.6)
    ax = fig.subplots()
    _style(ax)
    ax.grid(False, axis="x")
    x = np.arange(n)
    for i, role in enumerate(roles):
        acc = np.nan_to_num(np.asarray(accuracies[role], dtype=float), nan=0.0) * 100
        ax.bar(x + (i - (len(roles) - 1) / 2) * width, acc, width, label=_role_name(role), color=_colour(role, i))
    ax.set_xticks(x)
    rot = 0 if n <= 10 and max((len(c) for c in class_names), default=0) <= 6 else 45
    ax.set_xticklabels(list(class_names), rotation=rot, ha="right" if rot else "center", fontsize=_tick_fontsize(n))
    lows = [np.nanmin(np.asarray(a, dtype=float)) for a in accuracies.values() if np.isfinite(a).any()]
    low = min(lows) * 100 if lows else 0.0
    ax.set_ylim(max(0.0, low - 10), 100.5)
    ax.set_ylabel("test accuracy (%)", fontsize=9)
    ax.set_xlabel("true class", fontsize=9)
    ax.set_title("per-class test accuracy", fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    fig.legend(fontsize=8, frameon=False, ncols=len(roles), loc="outside lower center")
    return figure_png(fig)


# ----------------------------------------------------------- heatmaps
def _heatmap(
    matrix: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
    cbar_label: str,
    cmap: str,
    annotations: np.ndarray | None,
    vmax: float | None = None,
) -> bytes:
    n = len(class_names)
    side = min(9.0, max(3.8, 0.34 * n + 1.4))
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    from matplotlib import colormaps

    masked = np.ma.masked_invalid(matrix)
    cm = colormaps[cmap].with_extremes(bad="#d4d4d4")
    im = ax.imshow(masked, cmap=cm, vmin=0.0, vmax=vmax if vmax else None, interpolation="nearest")
    fs = _tick_fontsize(n)
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    ax.set_xticklabels(list(class_names), rotation=45 if n > 10 or max(len(c) for c in class_names) > 3 else 0,
                       ha="right" if n > 10 or max(len(c) for c in class_names) > 3 else "center", fontsize=fs)  # fmt: skip
    ax.set_yticklabels(list(class_names), fontsize=fs)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("true class", fontsize=9)
    ax.set_title(title, fontsize=10)
    if annotations is not None and n <= 15:
        finite = matrix[np.isfinite(matrix)]
        top = float(vmax or (finite.max() if finite.size else 1.0)) or 1.0
        for i in range(n):
            for j in range(n):
                text = annotations[i, j]
                if not text:
                    continue
                dark = np.isfinite(matrix[i, j]) and matrix[i, j] > 0.55 * top
                ax.text(j, i, text, ha="center", va="center", fontsize=max(5.5, fs - 1.0),
                        color="white" if dark else "#333333")  # fmt: skip
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label(cbar_label, fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    return figure_png(fig)


def confusion_heatmap(counts: np.ndarray, class_names: Sequence[str], title: str) -> bytes:
    """Confusion matrix ``counts`` (C, C) [true, predicted]; colour = share of the true class's row."""
    counts = np.asarray(counts)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    ann = np.array([[str(int(v)) if v else "" for v in row] for row in counts], dtype=object)
    return _heatmap(share, class_names, title=title, cbar_label="share of the true class", cmap="Blues",
                    annotations=ann, vmax=1.0)  # fmt: skip


def dark_knowledge_heatmap(mean_wrong: np.ndarray, class_names: Sequence[str], temperature: float = 1.0) -> bytes:
    """``mean_wrong`` (C, C): mean teacher probability of each wrong class j (column) given true class i
    (row); the diagonal is NaN (not a wrong class) and drawn grey."""
    m = 100 * np.asarray(mean_wrong, dtype=float)
    ann = np.array(
        [[("" if not np.isfinite(v) or v < 0.05 else f"{v:.1f}" if v < 10 else f"{v:.0f}") for v in row]
         for row in m],
        dtype=object,
    )  # fmt: skip
    t = f"T={temperature:g}"
    return _heatmap(m, class_names, title=f"teacher's probability on wrong classes ({t}, %)",
                    cbar_label="mean probability (%)", cmap="Oranges", annotations=ann)  # fmt: skip


# -------------------------------------------------------------- TensorBoard
_TB_NAMES = {
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "test_acc": "accuracy/test",
    "lr": "optim/lr",
    "seconds": "time/epoch_seconds",
    "samples_per_s": "time/samples_per_s",
}


def tensorboard_available() -> bool:
    """True when the optional ``tensorboard`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def write_tensorboard_curves(histories: dict[str, list[dict[str, Any]]], out_dir: Path) -> Path | None:
    """Write each role's per-epoch curves as TensorBoard scalars under ``out_dir/<role>/``.

    Tags: ``loss``, ``loss/<term>``, ``accuracy/{train,val,test}``, ``optim/lr``, ``time/*``; step = epoch.
    Returns ``out_dir``, or None when ``tensorboard`` is not installed. Existing event files of a role are
    replaced (written into a temporary folder first, then moved into place).
    """
    if not tensorboard_available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    out_dir.mkdir(parents=True, exist_ok=True)
    for role, hist in histories.items():
        if not hist:
            continue
        tmp = out_dir / f".{role}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        writer = SummaryWriter(log_dir=str(tmp))
        try:
            for row in hist:
                step = int(row.get("epoch", 0))
                for key, value in row.items():
                    if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                        continue
                    if not math.isfinite(value):
                        continue
                    writer.add_scalar(_TB_NAMES.get(key, key), float(value), global_step=step)
        finally:
            writer.close()
        final = out_dir / role
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    return out_dir
