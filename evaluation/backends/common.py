"""Helpers every backend shares."""

from __future__ import annotations


def truncate_at_stop(text: str, stop: list[str]) -> str:
    """Cut a completion at the first stop sequence (a backend may run a few tokens past one)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]
