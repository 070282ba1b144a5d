"""Figures for evaluation reports, written as PNG files.

Only matplotlib's object API is used (a ``Figure`` with an Agg canvas, never ``pyplot``), so
there is no global figure state and no GUI backend: safe in a worker process or a web server.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import cbook, colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

DPI = 120


def field_boxplots(
    rows: Iterable[Mapping] | pd.DataFrame,
    out_path: Path,
    title: str = "Per-field metrics across folds",
    *,
    metrics: Sequence[str] = ("precision", "recall", "f1"),
) -> Path:
    """One panel per descriptor field: boxplots across folds of each metric, methods side by
    side (the thesis's Figure 10, made comparable across methods).

    rows: one row per (fold, field, method) with a column per metric. A metric ``m`` is read
    from column ``m`` or, failing that, ``macro_m`` (as :func:`model.metrics.classification_report`
    names them). Without a ``method`` column every row belongs to one method. NaN values are
    left out of their box.
    """
    table = pd.DataFrame(rows)
    if table.empty:
        raise ValueError("field_boxplots: no rows to plot")
    if "field" not in table.columns:
        raise ValueError("field_boxplots: rows need a 'field' column")
    if "method" not in table.columns:
        table = table.assign(method="model")
    columns = [_metric_column(table, m) for m in metrics]
    fields = list(dict.fromkeys(table["field"].astype(str)))  # in order of appearance
    methods = list(dict.fromkeys(table["method"].astype(str)))
    colours = _colours(len(methods))

    n_cols = min(len(fields), 3)
    n_rows = math.ceil(len(fields) / n_cols)
    group_width = 0.8
    box_width = group_width / len(methods)
    fig = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, field_name in zip(axes, fields, strict=False):
        in_field = table[table["field"].astype(str) == field_name]
        for mi, method in enumerate(methods):
            in_method = in_field[in_field["method"].astype(str) == method]
            for gi, column in enumerate(columns):
                values = pd.to_numeric(in_method[column], errors="coerce").dropna().to_numpy()
                if len(values) == 0:
                    continue
                x = gi + (mi - (len(methods) - 1) / 2) * box_width
                _draw_box(ax, x, box_width * 0.85, values, colours[mi])
                jitter = np.linspace(-0.15, 0.15, len(values)) * box_width
                ax.scatter(x + jitter, values, s=10, color=colours[mi], zorder=3)  # each fold
        ax.set_title(field_name)
        ax.set_xticks(range(len(metrics)), [m.replace("_", " ") for m in metrics])
        ax.set_xlim(-0.6, len(metrics) - 0.4)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(fields) :]:
        ax.set_visible(False)
    handles = [
        Patch(facecolor=c, alpha=0.55, label=m) for c, m in zip(colours, methods, strict=True)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(methods), 5))
    fig.suptitle(title)
    return _save(fig, out_path)


def confusion_figure(
    matrix: np.ndarray | Sequence[Sequence[int]],
    true_labels: Sequence[str],
    pred_labels: Sequence[str],
    title: str,
    out_path: Path,
) -> Path:
    """Confusion matrix with counts written in each cell, colours normalised per true class.

    matrix: counts [len(true_labels), len(pred_labels)]; the predicted side may hold one more
    column than the true side (e.g. "not assessed", as :func:`model.metrics.confusion` returns).
    """
    counts = np.asarray(matrix)
    if counts.shape != (len(true_labels), len(pred_labels)):
        raise ValueError(
            f"confusion_figure: matrix of shape {counts.shape} for {len(true_labels)} true "
            f"and {len(pred_labels)} predicted labels"
        )
    totals = counts.sum(axis=1, keepdims=True).astype(float)
    shares = np.zeros(counts.shape)
    np.divide(counts, totals, out=shares, where=totals > 0)  # empty rows stay 0

    n_true, n_pred = counts.shape
    fig = Figure(
        figsize=(1.0 + 0.9 * max(n_pred, 2) + 1.2, 1.2 + 0.7 * max(n_true, 2)), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_true):
        for j in range(n_pred):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", color=colour)
    ax.set_xticks(range(n_pred), list(pred_labels), rotation=30, ha="right")
    ax.set_yticks(range(n_true), list(true_labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return _save(fig, out_path)


def loss_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]],
    out_path: Path,
    title: str = "Training and validation loss",
) -> Path:
    """Loss per epoch of each fold: training solid, validation dashed, one colour per fold.

    histories: fold name -> {"train_loss": [...], "val_loss": [...]}; either list may be
    missing or empty.
    """
    curves = [
        (fold, key, np.asarray(history.get(key, ()), dtype=float))
        for fold, history in histories.items()
        for key in ("train_loss", "val_loss")
    ]
    if not any(len(values) for _, _, values in curves):
        raise ValueError("loss_curves: no losses to plot")
    colours = dict(zip(histories, _colours(len(histories)), strict=True))

    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for fold, key, values in curves:
        if len(values) == 0:
            continue
        split = "train" if key == "train_loss" else "validation"
        epochs = np.arange(1, len(values) + 1)
        ax.plot(
            epochs,
            values,
            color=colours[fold],
            linestyle="-" if split == "train" else "--",
            marker="o" if len(values) == 1 else None,
            label=f"{fold} {split}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2 if len(histories) > 3 else 1)
    return _save(fig, out_path)


def _draw_box(ax, x: float, width: float, values: np.ndarray, colour) -> None:
    """A box (quartiles), median and 1.5 IQR whiskers, drawn from primitives: Axes.boxplot reads
    every rcParam, which makes matplotlib import pyplot to resolve its backend."""
    stats = cbook.boxplot_stats(values)[0]
    q1, q3 = stats["q1"], stats["q3"]
    ax.add_patch(
        Rectangle(
            (x - width / 2, q1),
            width,
            q3 - q1,
            facecolor=colour,
            alpha=0.55,
            edgecolor="black",
            linewidth=0.8,
        )
    )
    ax.plot([x - width / 2, x + width / 2], [stats["med"]] * 2, color="black", linewidth=1.2)
    for end, edge in ((stats["whislo"], q1), (stats["whishi"], q3)):
        ax.plot([x, x], [edge, end], color="black", linewidth=0.8)
        ax.plot([x - width / 4, x + width / 4], [end, end], color="black", linewidth=0.8)


def _metric_column(table: pd.DataFrame, metric: str) -> str:
    for column in (metric, f"macro_{metric}"):
        if column in table.columns:
            return column
    raise ValueError(f"field_boxplots: no column {metric!r} or 'macro_{metric}' in the rows")


def _colours(n: int) -> list:
    palette = colormaps["tab10"]
    return [palette(i % 10) for i in range(n)]


def _save(fig: Figure, out_path: Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches itself to the figure: PNG rendering without pyplot
    fig.savefig(out_path, format="png", dpi=DPI)
    return out_path


def reliability_figure(
    curves: Mapping[str, np.ndarray], out_path: Path, title: str = "Reliability"
) -> Path:
    """Observed accuracy against stated probability, one line per method.

    curves: method label -> float [3, bins] (counts, summed probabilities, right answers per
    equal-width bin, as metrics.reliability_bins); empty bins are skipped. The diagonal is
    perfect calibration; marker area grows with the bin's share of cases.
    """
    fig = Figure(figsize=(4.6, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":", label="calibrated")
    for (label, table), colour in zip(curves.items(), _colours(len(curves)), strict=True):
        counts, conf, right = np.asarray(table, float)
        used = counts > 0
        if not used.any():
            continue
        share = counts[used] / counts.sum()
        ax.plot(conf[used] / counts[used], right[used] / counts[used], color=colour, label=label)
        ax.scatter(
            conf[used] / counts[used],
            right[used] / counts[used],
            s=12 + 300 * share,
            color=colour,
            alpha=0.7,
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("stated probability of the answer")
    ax.set_ylabel("share answered right")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, out_path)


def paired_folds_figure(
    per_fold: pd.DataFrame, method: str, labels: tuple[str, str], title: str
) -> Figure:
    """One panel per field: each fold's macro-F1 of `method` in report a (left) joined to the
    same fold's in report b (right), so a change can be told from fold-to-fold noise.

    per_fold: rows of fold, field, method, a, b (the two reports' macro-F1 of that fold)."""
    table = per_fold[per_fold["method"].astype(str) == method]
    if table.empty:
        raise ValueError(f"paired_folds_figure: no rows of method {method!r}")
    fields = list(dict.fromkeys(table["field"].astype(str)))
    n_cols = min(len(fields), 3)
    n_rows = math.ceil(len(fields) / n_cols)
    fig = Figure(figsize=(3.4 * n_cols, 2.9 * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    up, down = _colours(2)
    for ax, field_name in zip(axes, fields, strict=False):
        rows = table[table["field"].astype(str) == field_name].sort_values("fold")
        for fold, a, b in rows[["fold", "a", "b"]].itertuples(index=False):
            colour = up if b >= a else down
            ax.plot([0, 1], [a, b], marker="o", color=colour, alpha=0.8)
            ax.annotate(str(fold), (1, b), xytext=(4, 0), textcoords="offset points", fontsize=7)
        ax.set_title(field_name)
        ax.set_xticks([0, 1], list(labels))
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("macro-F1")
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(fields) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (to serve it without a file)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
