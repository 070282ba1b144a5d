"""Vendored test tools are the files their README names, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

VENDOR = Path(__file__).resolve().parent / "vendor"


def test_axe_core_is_the_pinned_release():
    source = (VENDOR / "axe-core" / "axe.min.js").read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    assert digest == "880970c081707360e64f34cea25ff91892f5bc95675b0776925b9709dd8a68bb"
    assert source.startswith(b"/*! axe v4.10.3")
    assert digest in (VENDOR / "axe-core" / "README.md").read_text()
    assert "Mozilla Public License" in (VENDOR / "axe-core" / "LICENSE").read_text()
