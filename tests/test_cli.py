"""The `phi` command line: help and the demo command."""

from __future__ import annotations

import subprocess
import sys


def test_cli_help_and_demo(tmp_path):
    from tests.conftest import PHI2_TOKENIZER

    run = lambda *a: subprocess.run([sys.executable, "-m", "recipes.cli", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=300)
    top = run("--help")
    assert top.returncode == 0 and "reproduce" in top.stdout and "eval" in top.stdout
    demo = run("demo", "--output", str(tmp_path / "demo"), "--tokenizer", str(PHI2_TOKENIZER), "--max_new_tokens", "4")
    assert demo.returncode == 0, demo.stderr[-1000:]
    assert "tiny: " in demo.stdout and "M parameters" in demo.stdout
    assert (tmp_path / "demo" / "modeling_phi.py").is_file()
    bad = run("demo", "--preset", "phi-7", "--output", str(tmp_path / "bad"), "--tokenizer", str(PHI2_TOKENIZER))
    assert bad.returncode != 0 and "unknown model preset 'phi-7'" in bad.stderr and "Traceback" not in bad.stderr
