"""The lock files (requirements/*.txt, written by requirements/lock.sh) agree with pyproject.toml's
ranges, pin every package with hashes, and are what the Makefile and the Dockerfile install.
A dependency changed in pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCKS = REPO / "requirements"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def read_lock(name: str) -> dict[str, tuple[Version, list[str]]]:
    """{package: (pinned version, its sha256 hashes)} of one lock file."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current = None
    for line in (LOCKS / name).read_text().splitlines():
        if m := PIN.match(line):
            current = canonicalize_name(m[1])
            assert current not in pins, f"{name}: {current} pinned twice"
            pins[current] = (Version(m[2]), [])
        elif (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)) and current:
            pins[current][1].append(h[1])
        elif line.strip() and not line.lstrip().startswith("#"):
            assert line.startswith("    "), f"{name}: unexpected line {line!r}"
    return pins


def requirements(specs: list[str]) -> list[Requirement]:
    return [Requirement(spec) for spec in specs]


RUNTIME = requirements(PYPROJECT["project"]["dependencies"])
DEV = requirements(PYPROJECT["project"]["optional-dependencies"]["dev"])
DATA = requirements(PYPROJECT["tool"]["clipmed"]["data-packages"])


@pytest.mark.parametrize("lock", ["torch.txt", "runtime.txt", "dev.txt", "data.txt", "build.txt"])
def test_every_pin_has_hashes(lock):
    pins = read_lock(lock)
    assert pins
    assert all(hashes for _, hashes in pins.values()), [p for p, (_, h) in pins.items() if not h]


@pytest.mark.parametrize(
    ("lock", "wanted"),
    [("runtime.txt", RUNTIME), ("dev.txt", RUNTIME + DEV), ("data.txt", DATA)],
)
def test_the_locks_satisfy_pyproject(lock, wanted):
    pins = read_lock(lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is missing from {lock}: run `make lock`"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside pyproject's {requirement.specifier}: "
            "run `make lock`"
        )


def test_pyproject_states_ranges_and_torch_exactly():
    for requirement in RUNTIME + DEV:
        operators = {spec.operator for spec in requirement.specifier}
        if requirement.name == "torch":
            assert operators == {"=="}  # its CPU build is chosen by the lock
        else:
            assert operators == {">=", "<"}, f"{requirement}: a compatible range, not a pin"


def test_the_locks_agree_with_each_other():
    torch, runtime, dev = read_lock("torch.txt"), read_lock("runtime.txt"), read_lock("dev.txt")
    assert str(torch["torch"][0]).endswith("+cpu")  # never PyPI's CUDA build
    for name, (version, hashes) in torch.items():
        assert runtime[name] == (version, hashes), name
    for name, (version, hashes) in runtime.items():
        assert dev[name] == (version, hashes), name
    assert read_lock("build.txt")["setuptools"] == runtime["setuptools"]


def test_the_makefile_and_the_image_install_the_locks():
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    for lock in ("torch.txt", "runtime.txt", "build.txt"):
        for text in (makefile, dockerfile):
            assert re.search(rf"--require-hashes (-r \S+ )*-r \S*requirements/{lock}", text), lock
    for text in (makefile, dockerfile):
        assert re.search(r"--require-hashes --no-deps -r \S*requirements/data.txt", text)
        assert "--no-deps --no-build-isolation -e ." in text
    assert re.search(r"--require-hashes -r requirements/dev.txt", makefile)
    assert "dev.txt" not in dockerfile  # the image carries no test tools
    # `make run` installs the runtime only; `make test` adds the dev tools
    assert re.search(r"^run: \$\(RUNTIME\)$", makefile, re.M)
    assert re.search(r"^test: \$\(STAMP\)", makefile, re.M)
    assert re.search(r"^\$\(STAMP\): \$\(RUNTIME\) requirements/dev.txt$", makefile, re.M)


def test_the_image_installs_dependencies_before_the_source():
    """A code edit must not invalidate the dependency layer: the locks are copied and installed
    in the first stage, the source only afterwards; the build context is an allow-list."""
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert len(stages) == 2 and stages[0].split()[2] == "deps"
    assert "COPY --from=deps /opt/venv /opt/venv" in stages[1]
    assert "COPY requirements/" in stages[0] and "COPY model" not in stages[0]
    sources = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M)
    copied = {path.rstrip("/") for line in sources for path in line.split()}
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied == {p.split("/*")[0] for p in allowed}
    for unwanted in (".venv", "data", ".git", "reports", "tests", "secrets", ".env"):
        assert unwanted not in allowed
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd and "USER clipmed" in dockerfile and "HEALTHCHECK" in dockerfile
