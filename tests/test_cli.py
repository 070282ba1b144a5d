"""The `clipmed` command end to end, as a user runs it: a real process, real files."""

import csv as csvlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_support import clipmed

SMALL = [
    "--set",
    "embed_dim=32",
    "--set",
    "ff_dim=64",
    "--set",
    "epochs=2",
    "--set",
    "val_fraction=0",
    "--set",
    "patience=0",
]


@pytest.mark.parametrize(
    "sub",
    [
        [],
        ["data"],
        ["data", "lidc"],
        ["data", "simulate"],
        ["train"],
        ["explain"],
        ["evaluate"],
        ["demo"],
    ],
)
def test_every_command_has_help(sub):
    out = clipmed(*sub, "--help").stdout
    assert "Usage" in out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    clipmed(
        "data",
        "simulate",
        "--n",
        "120",
        "--out",
        str(root / "sim"),
        "--feature-dim",
        "24",
        "--signal",
        "2",
    )
    clipmed("train", "--cohort", str(root / "sim"), "--out", str(root / "ckpt"), *SMALL)
    return root


def test_simulate_train_explain(pipeline):
    np.save(pipeline / "case.npy", np.random.default_rng(0).normal(size=(5, 24)).astype("f4"))
    out = json.loads(
        clipmed("explain", str(pipeline / "ckpt"), str(pipeline / "case.npy"), "--k", "3").stdout
    )
    assert len(out["texts"]) == 3 and out["simulated"] is True
    assert out["schema"] == "thesis"


def test_train_scores_its_validation_patients_as_demo_does(pipeline):
    """`clipmed demo` trains through the same recipe: its model carries validation metrics,
    so the first registered version can be compared with the ones trained after it."""
    from model.checkpoint import Checkpoint

    out = pipeline / "ckpt-val"
    held_out = ["--set", "val_fraction=0.25"]
    clipmed("train", "--cohort", str(pipeline / "sim"), "--out", str(out), *SMALL, *held_out)
    ckpt = Checkpoint.load(out)
    metrics = ckpt.meta["metrics"]
    assert metrics["val/cases"] >= 10
    for field in ckpt.schema.fields:
        for mode in ("top1", "vote", "head"):
            assert 0.0 <= metrics[f"val/{field.name}/{mode}_macro_f1"] <= 1.0
    # without validation patients there is nothing to score, and nothing is made up
    assert Checkpoint.load(pipeline / "ckpt").meta["metrics"] == {}


def test_explain_bad_file_exits_2_with_the_problem(pipeline):
    np.save(pipeline / "wrong.npy", np.zeros((4, 7), "f4"))
    proc = clipmed("explain", str(pipeline / "ckpt"), str(pipeline / "wrong.npy"), check=False)
    assert proc.returncode == 2
    assert "expected 24 features per slice, got 7" in proc.stderr


def test_train_refuses_to_overwrite_and_unknown_settings(pipeline):
    proc = clipmed(
        "train", "--cohort", str(pipeline / "sim"), "--out", str(pipeline / "ckpt"), check=False
    )
    assert proc.returncode == 2 and "already exists" in proc.stderr
    proc = clipmed(
        "train",
        "--cohort",
        str(pipeline / "sim"),
        "--out",
        str(pipeline / "x"),
        "--set",
        "wings=2",
        check=False,
    )
    assert proc.returncode == 2 and "unknown setting 'wings'" in proc.stderr
    proc = clipmed(
        "train", "--cohort", str(pipeline / "nope"), "--out", str(pipeline / "x"), check=False
    )
    assert proc.returncode == 2 and "not a cohort folder" in proc.stderr


def test_evaluate_writes_the_report_contract(pipeline):
    out = pipeline / "report"
    clipmed(
        "evaluate", "--cohort", str(pipeline / "sim"), "--folds", "2", "--out", str(out), *SMALL
    )
    assert (out / "summary.md").read_text().startswith("> **SIMULATED COHORT**")
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"fold", "field", "method", "macro_f1", "accuracy"} <= set(header)
    assert list((out / "figures").glob("*.png"))


def test_explain_a_cohort_and_a_folder_of_case_files(pipeline):
    out = pipeline / "sim.jsonl"
    clipmed("explain", str(pipeline / "ckpt"), str(pipeline / "sim"), "--k", "3", "--out", str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 120 and all(len(line["texts"]) == 3 for line in lines)
    assert len({line["case"] for line in lines}) == 120
    folder = pipeline / "cases"
    folder.mkdir()
    rng = np.random.default_rng(1)
    np.save(folder / "a.npy", rng.normal(size=(3, 24)).astype("f4"))
    np.save(folder / "b.npy", np.zeros((2, 7), "f4"))
    far = rng.normal(size=(2, 24)).astype("f4")
    far[1, 3] = 1e5  # finite, far beyond every training value: refused alone, as one case is
    np.save(folder / "c.npy", far)
    single = json.loads(clipmed("explain", str(pipeline / "ckpt"), str(folder / "a.npy")).stdout)
    alone = clipmed("explain", str(pipeline / "ckpt"), str(folder / "c.npy"), check=False)
    assert alone.returncode == 2 and "far outside" in alone.stderr
    proc = clipmed("explain", str(pipeline / "ckpt"), str(folder), "--format", "csv", check=False)
    assert proc.returncode == 1 and "1 cases explained, 2 refused" in proc.stderr
    rows = list(csvlib.DictReader(io.StringIO(proc.stdout)))
    assert [r["case"] for r in rows] == ["a.npy", "b.npy", "c.npy"]
    assert "far outside" in rows[2]["error"]
    field = single["fields"][0]
    assert rows[0][field["field"]] == str(field["served"]["value"])
    assert float(rows[0][f"{field['field']}_probability"]) == field["served"]["probability"]
    assert "expected 24 features per slice, got 7" in rows[1]["error"]


# --- conventions: exit statuses, choices, completion, --version -------------------------------
def test_version():
    from importlib.metadata import version

    assert clipmed("--version").stdout.strip() == f"clipmed {version('clipmedical')}"


def test_usage_errors_exit_2_and_runtime_errors_exit_1(pipeline, tmp_path):
    unknown = clipmed("train", "--cohort", "x", "--out", "y", "--preset", "huge", check=False)
    assert unknown.returncode == 2 and "'huge' is not one of" in unknown.stderr
    schema = clipmed("evaluate", "--cohort", "x", "--out", "y", "--schema", "other", check=False)
    assert schema.returncode == 2 and "'other' is not one of" in schema.stderr
    np.save(tmp_path / "case.npy", np.zeros((2, 24), "f4"))
    (tmp_path / "broken").mkdir()  # a checkpoint folder that does not load: a runtime error
    broken = clipmed("explain", str(tmp_path / "broken"), str(tmp_path / "case.npy"), check=False)
    assert broken.returncode == 1 and broken.stderr.startswith("error: ")


def test_completion_offers_the_choices():
    def complete(words: str, cword: int) -> list[str]:
        env = {**os.environ, "_CLIPMED_COMPLETE": "complete_bash", "COMP_WORDS": words}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "clipmed")],
            env=env | {"COMP_CWORD": str(cword)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout.split()

    from model.config import PRESETS

    assert complete("clipmed train --preset ", 3) == list(PRESETS)
    assert complete("clipmed train --preset lidc", 3) == ["lidc", "lidc-attn"]
    assert complete("clipmed evaluate --schema ", 3) == ["lidc", "lidc-ratings", "thesis"]
    assert complete("clipmed users create --role ", 4) == ["clinician", "radiologist", "admin"]


def test_a_csv_header_must_name_the_checkpoints_features(pipeline, tmp_path):
    rows = np.random.default_rng(2).normal(size=(3, 24)).round(4)
    names = [f"sim_{j:04d}" for j in range(24)]

    def explain(header: list[str] | None) -> subprocess.CompletedProcess:
        lines = ([",".join(header)] if header else []) + [",".join(map(str, r)) for r in rows]
        (tmp_path / "case.csv").write_text("\n".join(lines) + "\n")
        return clipmed("explain", str(pipeline / "ckpt"), str(tmp_path / "case.csv"), check=False)

    assert explain(None).returncode == 0  # no header: the values in the model's order
    assert explain(names).returncode == 0
    swapped = names[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    refused = explain(swapped)
    assert refused.returncode == 2
    assert "column 1 is 'sim_0001', the model's feature 1 is 'sim_0000'" in refused.stderr
    assert "column 2 is 'sim_0000'" in refused.stderr


# The worker's stop signals: the event is set by a relay thread, never by a Python signal
# handler (which could run while the main thread holds the event's lock inside wait()).
WAITS_FOR_A_SIGNAL = """
import threading
from clipmed.cli import stop_on_signals
stop = threading.Event()
stop_on_signals(stop)
print("ready", flush=True)
waits = 0
while not stop.wait(0.00001):  # as an idle worker polls, only far more often
    waits += 1
print("stopped", flush=True)
"""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_a_waiting_loop_cleanly(signum):
    import signal
    import time

    for attempt in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", WAITS_FOR_A_SIGNAL], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(0.02 * attempt)
            proc.send_signal(getattr(signal, signum))
            out, _ = proc.communicate(timeout=10)
        finally:
            proc.kill()
        # handled (not the default action, which ends the process by the signal), then relayed
        assert (proc.returncode, out.strip()) == (0, "stopped")
