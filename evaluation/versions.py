"""Library versions for the protocol block of every results.json (so numbers say what produced them)."""

from __future__ import annotations

import platform
from importlib import metadata


def library_versions(*packages: str) -> dict[str, str]:
    """Python's version and each installed distribution's; missing ones are reported as such."""
    out = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
