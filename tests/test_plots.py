import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from model.metrics import confusion
from model.plots import confusion_figure, field_boxplots, loss_curves


def _read_png(path):
    assert path.is_file() and path.suffix == ".png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("L"))
    assert 300 <= width <= 4000 and 200 <= height <= 4000
    assert pixels.std() > 0  # something was drawn
    return width, height


def _metric_rows(methods=("clip", "baseline"), fields=("shape", "density", "cdiff")):
    rng = np.random.default_rng(0)
    return [
        {
            "fold": fold,
            "field": field,
            "method": method,
            "precision": rng.uniform(),
            "recall": rng.uniform(),
            "f1": rng.uniform(),
        }
        for fold in range(5)
        for field in fields
        for method in methods
    ]


def test_field_boxplots_from_rows_and_from_a_dataframe(tmp_path):
    rows = _metric_rows()
    a = field_boxplots(rows, tmp_path / "a.png", "Per-field metrics")
    b = field_boxplots(pd.DataFrame(rows), tmp_path / "sub" / "b.png", "Per-field metrics")
    assert a == tmp_path / "a.png"
    _read_png(a)
    _read_png(b)


def test_field_boxplots_reads_macro_columns_and_constant_fields(tmp_path):
    # a field with a single class scores the same in every fold; one method, no method column
    rows = [
        {"fold": k, "field": f, "macro_precision": 1.0, "macro_recall": 1.0, "macro_f1": 1.0}
        for k in range(3)
        for f in ("vinfiltration", "necrosis", "cdiff", "shape")
    ]
    rows[0]["macro_f1"] = float("nan")  # a missing value is left out of its box
    _read_png(field_boxplots(rows, tmp_path / "macro.png", "One class"))


def test_field_boxplots_refuses_empty_rows_or_unknown_metrics(tmp_path):
    with pytest.raises(ValueError):
        field_boxplots([], tmp_path / "x.png", "empty")
    with pytest.raises(ValueError):
        field_boxplots(_metric_rows(), tmp_path / "x.png", "t", metrics=("auc",))
    assert not (tmp_path / "x.png").exists()


def test_confusion_figure_with_unknown_column_and_empty_row(tmp_path):
    matrix = confusion([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, -1, 0], 4)  # class 3 is never true
    out = confusion_figure(
        matrix,
        ["well", "moderate", "poor", "other"],
        ["well", "moderate", "poor", "other", "not assessed"],
        "cdiff",
        tmp_path / "confusion.png",
    )
    _read_png(out)


def test_confusion_figure_of_a_single_class(tmp_path):
    out = confusion_figure([[7, 0]], ["solid"], ["solid", "not assessed"], "d", tmp_path / "s.png")
    _read_png(out)
    with pytest.raises(ValueError):
        confusion_figure([[1, 2]], ["a", "b"], ["a"], "bad", tmp_path / "bad.png")


def test_loss_curves(tmp_path):
    histories = {
        f"fold {k}": {"train_loss": [2.9, 2.7, 2.6, 2.55], "val_loss": [3.0, 2.9, 2.85, 2.9]}
        for k in range(5)
    }
    histories["fold 5"] = {"train_loss": [2.8]}  # one epoch, no validation
    _read_png(loss_curves(histories, tmp_path / "loss.png"))
    with pytest.raises(ValueError):
        loss_curves({"fold 0": {"train_loss": []}}, tmp_path / "none.png")


def test_plots_never_import_pyplot(tmp_path):
    # in a fresh interpreter: another test may have imported pyplot into this one
    script = f"""
import sys
from pathlib import Path
from model.plots import confusion_figure, field_boxplots, loss_curves
out = Path({str(tmp_path)!r})
field_boxplots([{{"fold": 0, "field": "shape", "precision": 0.5, "recall": 0.4, "f1": 0.45}}],
               out / "b.png")
confusion_figure([[3, 1, 0], [0, 2, 1]], ["a", "b"], ["a", "b", "not assessed"], "t",
                 out / "c.png")
loss_curves({{"fold 0": {{"train_loss": [2.0, 1.5], "val_loss": [2.1, 1.9]}}}}, out / "l.png")
assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
"""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert len(list(tmp_path.glob("*.png"))) == 3
