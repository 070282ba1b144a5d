"""Saves a copy of a checkpoint with a fault injected at one step of Checkpoint.save.

    python save_with_fault.py SOURCE TARGET --fault {none,kill,disk-full} --step K

The steps are the writers Checkpoint.save calls (safetensors, the catalog, the case index,
checkpoint.json, the final rename), counted at the outermost call only; each is printed as it
starts, so `--fault none` lists them. `kill`: SIGKILL to this process just before step K (K one
past the last: after the rename, before save returns). `disk-full`: from step K on no file may
grow past 0 bytes (RLIMIT_FSIZE, SIGXFSZ ignored), so the next write fails with EFBIG, as it
would with ENOSPC on a full disk.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import resource
import signal
import sys

from model import checkpoint
from model.catalog import CaseIndex, Catalog

# (owner, attribute) of every writer Checkpoint.save calls directly
WRITERS = [
    (checkpoint, "save_file"),
    (checkpoint, "save_numpy"),
    (Catalog, "save"),
    (CaseIndex, "save"),
    (pathlib.Path, "write_text"),
    (os, "replace"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--fault", choices=["none", "kill", "disk-full"], default="none")
    parser.add_argument("--step", type=int, default=0)
    args = parser.parse_args()

    ckpt = checkpoint.Checkpoint.load(pathlib.Path(args.source))
    state = {"depth": 0, "steps": 0}

    def fault_here() -> None:
        if args.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif args.fault == "disk-full":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))

    def wrap(name: str, real):
        @functools.wraps(real)
        def step(*a, **kw):
            if state["depth"] == 0:
                state["steps"] += 1
                print(f"step {state['steps']} {name}", flush=True)
                if state["steps"] == args.step:
                    fault_here()
            state["depth"] += 1
            try:
                return real(*a, **kw)
            finally:
                state["depth"] -= 1

        return step

    for owner, attribute in WRITERS:
        name = f"{getattr(owner, '__name__', owner)}.{attribute}"
        setattr(owner, attribute, wrap(name, getattr(owner, attribute)))

    ckpt.save(pathlib.Path(args.target))
    if args.step == state["steps"] + 1:
        fault_here()  # after the rename: the folder is in place, save has not returned
    print(f"saved after {state['steps']} steps", flush=True)


if __name__ == "__main__":
    sys.exit(main())
