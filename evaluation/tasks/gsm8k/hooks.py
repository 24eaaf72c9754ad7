"""GSM8K's hooks: records with the numeric target and a reference program; the checking program.

The reference program is the reference solution's own arithmetic: each calculator annotation
`<<expression=result>>` becomes one statement, and the program prints the last annotation whose result is
the final answer (or the final answer itself when none is). The checking program runs the model's program
with its output captured, takes the last number it printed, and compares it with the target inside the
sandbox, so the result names the reason: "failed: printed nothing", "failed: wrong answer 17 (expected 18)".
"""

from __future__ import annotations

import re
from typing import Any

ANNOTATION = re.compile(r"<<([^=<>]*)=([^<>]*)>>")

CHECK = '''
import contextlib as _contextlib, io as _io, re as _re
_out = _io.StringIO()
with _contextlib.redirect_stdout(_out):
    exec(compile({completion!r}, "<program>", "exec"), {{"__name__": "__main__"}})
_numbers = _re.findall(r"-?\\d[\\d,]*(?:\\.\\d+)?", _out.getvalue())
if not _out.getvalue().strip():
    raise AssertionError("printed nothing")
if not _numbers:
    raise AssertionError("printed no number")
_got = float(_numbers[-1].replace(",", ""))
if abs(_got - {target!r}) > 1e-6 * max(1.0, abs({target!r})):
    raise AssertionError("wrong answer " + _numbers[-1] + " (expected {answer})")
'''


def _number(text: str) -> float:
    return float(text.strip().replace(",", "").rstrip("."))


def reference_program(answer: str) -> str:
    """The arithmetic of a reference solution as a Python program that prints the final answer."""
    final = answer.split("####")[-1].strip()
    lines, printed = [], None
    for i, (expression, result) in enumerate(ANNOTATION.findall(answer)):
        try:
            compile(expression, "<annotation>", "eval")
        except SyntaxError:
            continue
        lines.append(f"step_{i} = {expression.strip()}")
        try:
            if abs(_number(result) - _number(final)) < 1e-9:
                printed = f"step_{i}"
        except ValueError:
            pass
    lines.append(f"print({printed or final.replace(',', '')})")
    return "\n".join(lines) + "\n"


def gsm8k_record(raw: dict[str, Any]) -> dict[str, Any]:
    """The target number and the reference program (task ids are `gsm8k/<line index>`)."""
    final = raw["answer"].split("####")[-1].strip()
    return {**raw, "answer_text": final, "target": _number(final), "reference_program": reference_program(raw["answer"])}


def gsm8k_program(problem: dict[str, Any], completion: str) -> str:
    """The sandbox program: run the model's program, compare the last number it prints."""
    return CHECK.format(completion=completion, target=problem["target"], answer=problem["answer_text"])
