"""Run transformers' own Phi model test suite against native Phi and against our `modeling_phi` classes.

    python tests/transformers_suite/run_suite.py --tests-src /path/to/transformers   # a checkout at the release tag

The suite is transformers' `tests/models/phi/test_modeling_phi.py` with the mixins it inherits (`ModelTesterMixin`,
`GenerationTesterMixin`, `PipelineTesterMixin`, `CausalLMModelTest`, ...) of the *installed* release. None of those
files are kept in this repository: they are assembled in a cache folder outside it (default
`~/.cache/phi-textbooks/transformers-suite/<version>`) from

1. the release's sdist (`pip download --no-binary :all: transformers==<version>`), which ships `src/` and the
   top-level `tests/*.py` (test_modeling_common.py, test_configuration_common.py, test_pipeline_mixin.py, ...);
2. `--tests-src DIR`, a transformers source tree (e.g. `git clone --depth 1 --branch v<version>
   https://github.com/huggingface/transformers`), for what the sdist does not ship: tests/causal_lm_tester.py,
   tests/generation/, tests/exporters/, tests/utils/, tests/models/phi/ (they replace earlier copies in the cache).

pytest then runs the phi module twice, once as is ("native") and once with `phi_substitute.py` swapping in our
classes ("ours"), and the outcomes are compared test by test. Results: a table on stdout and JSON
(`benchmarks/results/transformers_suite.json` by default); `--failures-md` also writes the tests that differ,
grouped by error message.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
REPO = SUITE_DIR.parents[1]
PHI_TEST = "tests/models/phi/test_modeling_phi.py"
# what the phi module needs beyond the sdist; generation/ and exporters/ are mixins imported by test_modeling_common
FROM_SOURCE_TREE = ("tests/causal_lm_tester.py", "tests/generation/test_utils.py", "tests/exporters/test_export.py",
                    "tests/utils/test_configuration_utils.py", PHI_TEST)
STUBBABLE = {"generation": "tests/generation/test_utils.py", "exporters": "tests/exporters/test_export.py"}
STUB_MARK = "PHI_SUITE_STUB"
STUB_SOURCE = {
    "generation": "class GenerationTesterMixin:\n    pass\n",
    "exporters": "class ExportTesterMixin:\n    pass\n\n\nclass ExportGenerateTesterMixin:\n    pass\n",
}
# tests/utils/tiny_model_summary.json lists the Hub's tiny models for pipeline tests; phi's test class skips every
# pipeline test (`is_pipeline_test_to_skip` returns True), so an empty summary only changes the skip message.
TINY_MODEL_SUMMARY = "tests/utils/tiny_model_summary.json"
PACKAGES = ("tests", "tests/models", "tests/models/phi", "tests/generation", "tests/exporters", "tests/utils")
# transformers' own skip messages when a tester has no such head: the heads this package does not provide
NOT_APPLICABLE = re.compile(r"does not support (sequence classification|token classification|question answering)")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "phi-textbooks" / "transformers-suite"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_sdist(version: str, root: Path) -> None:
    """Unpack the release's sdist (`src/`, top-level `tests/*.py`) into `root`."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"transformers=={version}", "-d", tmp]
        if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
            sys.exit(f"run_suite: could not download the transformers {version} sdist with `{' '.join(cmd)}`; "
                     f"pass --tests-src with a transformers {version} source tree instead")
        (archive,) = Path(tmp).glob("transformers-*.tar.gz")
        with tarfile.open(archive) as tar:
            prefix = f"transformers-{version}/"
            members = [m for m in tar.getmembers() if m.name.startswith((prefix + "src/", prefix + "tests/"))]
            for m in members:
                m.name = m.name[len(prefix):]
            tar.extractall(root, members=members, filter="data")
    (root / "ORIGIN-sdist").write_text(f"transformers=={version} sdist\n")


def overlay_source_tree(src: Path, root: Path) -> list[str]:
    """Copy from a transformers source tree the suite files the sdist lacks; returns the paths copied."""
    if not (src / "tests").is_dir():
        sys.exit(f"run_suite: --tests-src {src} has no tests/ folder; give the root of a transformers checkout")
    # optional PROVENANCE.json in the tree: {"tests/...": "where this copy came from"} (e.g. for a partial tree)
    provenance = json.loads((src / "PROVENANCE.json").read_text()) if (src / "PROVENANCE.json").is_file() else {}
    copied = []
    for rel in FROM_SOURCE_TREE + (TINY_MODEL_SUMMARY,):
        source, target = src / rel, root / rel
        if source.is_file() and (not target.is_file() or sha256(source) != sha256(target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            (root / "ORIGIN").mkdir(exist_ok=True)
            origin = f"{source}" + (f" ({provenance[rel]})" if rel in provenance else "")
            (root / "ORIGIN" / rel.replace("/", "__")).write_text(origin + "\n")
            copied.append(rel)
    return copied


def assemble(version: str, cache: Path, sources: list[Path], allow_missing: set[str]) -> Path:
    """Lay out the suite for `version` under `cache`; returns its root."""
    root = cache / version
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "tests" / "test_modeling_common.py").is_file():
        fetch_sdist(version, root)
    for src in sources:
        overlay_source_tree(src, root)
    for pkg in PACKAGES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").touch()
    if not (root / TINY_MODEL_SUMMARY).is_file():
        (root / TINY_MODEL_SUMMARY).write_text("{}\n")
    for name, rel in STUBBABLE.items():
        path = root / rel
        if name in allow_missing and not path.is_file():
            path.write_text(f'"""{STUB_MARK}: {rel} of transformers {version} was not available; its mixin is '
                            f'empty, so none of its tests run."""\n\n\n{STUB_SOURCE[name]}')
    missing = [rel for rel in FROM_SOURCE_TREE if not (root / rel).is_file()]
    if missing:
        sys.exit(f"run_suite: the transformers {version} sdist lacks {', '.join(missing)}; pass --tests-src with a "
                 f"transformers v{version} checkout (git clone --depth 1 --branch v{version} "
                 "https://github.com/huggingface/transformers), or put the files under "
                 f"{root}/ (--allow-missing generation,exporters runs without those two mixins, reported as stubs)")
    return root


def manifest(root: Path) -> tuple[dict[str, dict], list[str]]:
    """Origin and sha256 of every suite file the phi module imports; and which mixin files are stubs."""
    files, stubs = {}, []
    for rel in ("tests/test_modeling_common.py", "tests/test_configuration_common.py", "tests/test_pipeline_mixin.py",
                "tests/test_training_mixin.py", *FROM_SOURCE_TREE, TINY_MODEL_SUMMARY):
        path = root / rel
        if not path.is_file():
            continue
        origin_file = root / "ORIGIN" / rel.replace("/", "__")
        text = path.read_text(errors="ignore")
        if STUB_MARK in text:
            origin = "stub (file not available)"
            stubs.append(rel)
        elif rel == TINY_MODEL_SUMMARY and text.strip() == "{}":
            origin = "empty stand-in (pipeline tests are skipped by the phi test class)"
        elif origin_file.is_file():
            origin = origin_file.read_text().strip()
        elif rel.count("/") == 1 and rel.endswith(".py") and rel != "tests/causal_lm_tester.py":
            origin = "sdist"
        else:
            origin = "placed in the cache by hand"
        files[rel] = {"origin": origin, "sha256": sha256(path)}
    return files, stubs


def run_pytest(root: Path, target: str, xml: Path, timeout: int, extra: list[str], ours_path: Path | None,
               run_slow: bool) -> int:
    env = dict(os.environ, PHI_SUITE_TARGET=target, OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", RUN_SLOW="1" if run_slow else "0")
    paths = [str(SUITE_DIR)] + ([str(ours_path)] if ours_path else []) + [str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    cmd = [sys.executable, "-m", "pytest", PHI_TEST, "-p", "phi_substitute", "-p", "no:cacheprovider", "-q", "-rfE",
           "-W", "ignore::pytest.PytestUnknownMarkWarning", f"--junitxml={xml}", *extra]
    try:
        import pytest_timeout  # noqa: F401

        cmd.append(f"--timeout={timeout}")
    except ImportError:
        pass
    print(f"[{target}] (cd {root} && PHI_SUITE_TARGET={target} {' '.join(cmd[1:])})", flush=True)
    return subprocess.run(cmd, cwd=root, env=env).returncode


def outcomes(xml: Path) -> dict[str, dict]:
    """Test id -> {"outcome": passed|failed|error|skipped, "message": ...} from a junit report."""
    result: dict[str, dict] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = child.get("message") or ""
                if not message and (child.text or "").strip():
                    message = child.text.strip().splitlines()[-1]
                break
        previous = result.get(test)
        rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
        if previous is None or rank[outcome] > rank[previous["outcome"]]:
            result[test] = {"outcome": outcome, "message": message.strip()}
    return result


def compare(native: dict[str, dict], ours: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """Tests whose outcome differs, and those that only concern heads this package does not provide."""
    differing, not_applicable = [], []
    for test in sorted(set(native) | set(ours)):
        n, o = native.get(test, {"outcome": "absent", "message": ""}), ours.get(test, {"outcome": "absent",
                                                                                       "message": ""})
        if n["outcome"] == o["outcome"]:
            continue
        kind = ("regression" if n["outcome"] == "passed" else
                "passes_only_on_ours" if o["outcome"] == "passed" else "other")
        row = {"test": test, "kind": kind, "native": n["outcome"], "ours": o["outcome"],
               "native_message": n["message"][:500], "ours_message": o["message"][:500]}
        if o["outcome"] == "skipped" and NOT_APPLICABLE.search(o["message"]):
            row["reason"] = ("tests a task head (sequence / token classification, question answering) that "
                             "modeling_phi does not provide; transformers' own test skips it when the head is absent")
            not_applicable.append(row)
        else:
            differing.append(row)
    return differing, not_applicable


def cause_key(message: str) -> str:
    """A message with the numbers and object addresses taken out, to group failures by cause."""
    first = message.strip().splitlines()[0] if message.strip() else "(no message)"
    first = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", re.sub(r"0x[0-9a-f]+", "ADDR", first))
    return first[:240]


def write_failures_md(path: Path, report: dict) -> None:
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for row in report["differing"]:
        groups[cause_key(row["ours_message"] or f"ours {row['ours']}, native {row['native']}")].append(row)
    lines = [f"# transformers {report['transformers']} Phi suite: native vs ours ({report['date']})", "",
             f"commit {report['commit']}; native {report['counts']['native']}; ours {report['counts']['ours']}",
             f"differing: {len(report['differing'])}; not applicable: {len(report['not_applicable'])}", ""]
    if report["stubbed"]:
        lines += [f"NOT RUN (files unavailable, mixins empty): {', '.join(report['stubbed'])}", ""]
    for cause, rows in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines += [f"## {len(rows)} x `{cause}`", ""]
        lines += [f"- `{r['test']}` native={r['native']} ours={r['ours']}: {r['ours_message'][:300]}" for r in rows]
        lines.append("")
    if report["not_applicable"]:
        lines += ["## not applicable (heads modeling_phi does not provide)", ""]
        lines += [f"- `{r['test']}`: {r['ours_message'][:120]}" for r in report["not_applicable"]]
    path.write_text("\n".join(lines) + "\n")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", default=transformers.__version__,
                        help="transformers release whose tests to run (default: the installed one)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--tests-src", type=Path, action="append", default=[],
                        help="a transformers source tree (checkout at the release tag) for the files the sdist lacks")
    parser.add_argument("--allow-missing", default="",
                        help="comma list of mixins to run without if unavailable: generation,exporters")
    parser.add_argument("--ours-rev", help="test modeling_phi as of this git revision instead of the working tree")
    parser.add_argument("--only", choices=("both", "native", "ours"), default="both")
    parser.add_argument("--timeout", type=int, default=600, help="per-test timeout in seconds (pytest-timeout)")
    parser.add_argument("--run-slow", action="store_true",
                        help="also the suite's @slow tests (RUN_SLOW=1); its Hub integration tests need network")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "transformers_suite.json")
    parser.add_argument("--failures-md", type=Path, help="also write the differing tests grouped by cause here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    if args.version != transformers.__version__:
        sys.exit(f"run_suite: --version {args.version} but transformers {transformers.__version__} is installed; "
                 "the suite must match the installed release")
    allow = {name for name in args.allow_missing.split(",") if name}
    if allow - set(STUBBABLE):
        sys.exit(f"run_suite: --allow-missing accepts {', '.join(STUBBABLE)}, not {', '.join(allow - set(STUBBABLE))}")
    root = assemble(args.version, args.cache_dir.expanduser(), [p.resolve() for p in args.tests_src], allow)
    files, stubs = manifest(root)

    with tempfile.TemporaryDirectory() as tmp:
        ours_path = None
        if args.ours_rev:
            ours_path = Path(tmp) / "ours"
            ours_path.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.ours_rev, "modeling_phi"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(ours_path)], input=archive, check=True)
        results = {}
        for target in ("native", "ours"):
            if args.only in (target, "both"):
                xml = Path(tmp) / f"{target}.xml"
                run_pytest(root, target, xml, args.timeout, args.pytest_args, ours_path, args.run_slow)
                if not xml.is_file():
                    sys.exit(f"run_suite: pytest wrote no report for {target}; see its output above")
                results[target] = outcomes(xml)

    counts = {t: dict(collections.Counter(r["outcome"] for r in res.values())) for t, res in results.items()}
    differing, not_applicable = compare(results.get("native", {}), results.get("ours", {})) \
        if len(results) == 2 else ([], [])
    import torch

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "HEAD") + ("" if not git("status", "--porcelain", "modeling_phi") else "+dirty"),
        "ours_rev": args.ours_rev or "working tree", "run_slow": args.run_slow,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "transformers": transformers.__version__, "torch": torch.__version__,
        "suite_root": str(root), "suite_files": files, "stubbed": stubs,
        "counts": counts, "differing": differing, "not_applicable": not_applicable,
        "outcomes": {test: {target: res.get(test, {}).get("outcome", "absent") for target, res in results.items()}
                     for test in sorted(set().union(*results.values()))},
        "command": "python tests/transformers_suite/run_suite.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    print(f"\ntransformers {report['transformers']} Phi suite ({PHI_TEST} + mixins), modeling_phi "
          f"{report['ours_rev']} @ {report['commit'][:12]}")
    for target, c in counts.items():
        print(f"  {target:6s} " + ", ".join(f"{c.get(k, 0)} {k}" for k in ("passed", "failed", "error", "skipped")))
    if stubs:
        print(f"  NOT RUN: {', '.join(stubs)} unavailable, their mixins were empty stubs")
    print(f"  differing: {len(differing)}    not applicable (heads we do not provide): {len(not_applicable)}")
    for row in differing:
        print(f"    [{row['kind']}] {row['test']}: native {row['native']}, ours {row['ours']}  "
              f"{row['ours_message'][:150]}")
    for row in not_applicable:
        print(f"    n/a {row['test']}: {row['ours_message'][:80]}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")
    if args.failures_md:
        write_failures_md(args.failures_md, report)
        print(f"wrote {args.failures_md}")
    # a test that passes on native but not on ours is what this harness exists to catch
    return 1 if any(row["kind"] == "regression" for row in differing) else 0


if __name__ == "__main__":
    sys.exit(main())
