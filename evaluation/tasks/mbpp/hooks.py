"""MBPP's hook: one record, full or sanitized layout, with the fields the templates read."""

from __future__ import annotations

from typing import Any


def mbpp_record(raw: dict[str, Any]) -> dict[str, Any]:
    """`task_id` as "Mbpp/N", the description (`text` or sanitized `prompt`), first test, all tests, setup."""
    tests = list(raw["test_list"])
    setup = raw.get("test_setup_code") or "\n".join(raw.get("test_imports") or [])
    return {"task_id": f"Mbpp/{raw['task_id']}", "text": raw.get("text") or raw.get("prompt"), "code": raw["code"],
            "first_test": tests[0], "tests": "\n".join(tests), "setup": setup}
