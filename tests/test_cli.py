"""The `clipmed` command end to end, as a user runs it: a real process, real files."""

import csv as csvlib
import io
import json

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
    single = json.loads(clipmed("explain", str(pipeline / "ckpt"), str(folder / "a.npy")).stdout)
    proc = clipmed("explain", str(pipeline / "ckpt"), str(folder), "--format", "csv", check=False)
    assert proc.returncode == 1 and "1 cases explained, 1 refused" in proc.stderr
    rows = list(csvlib.DictReader(io.StringIO(proc.stdout)))
    assert [r["case"] for r in rows] == ["a.npy", "b.npy"]
    field = single["fields"][0]
    assert rows[0][field["field"]] == str(field["served"]["value"])
    assert float(rows[0][f"{field['field']}_probability"]) == field["served"]["probability"]
    assert "expected 24 features per slice, got 7" in rows[1]["error"]
