"""The paper's central comparison at tiny scale, on a common yardstick, with seeds and error bars.

`phi reproduce --ablation --seeds K` pretrains two arms with the same compute, K times each:

- filtered: the quality-filtered code + mined textbook sections, with the tokenizer trained on them
  (the main run's `pretrain` is its first seed: same data, tokenizer, config and seed);
- unfiltered: the pre-filtered, deduplicated code without the quality filter and without textbook, with a
  tokenizer trained on that corpus.

Seed s changes the model's initialisation and the data order (and the packing's eval split); the data, the
tokenizers and the yardstick are built once and shared by every seed. The arms are pretrained only: the paper's
comparison is about the pretraining data, and the yardstick is measured on the base models (the main run still
finetunes its model on the exercises and evaluates HumanEval / MBPP pass@1 and multiple choice).

The yardstick is bits per byte (`evaluation/bits_per_byte.py`, tokenizer-independent) of completions given
their prompts, the same items for every model: HumanEval's canonical solutions, MBPP's reference code, and
documented functions of a held-out slice of the source tree (a fixed hash of each file's path, whatever the
seed) that no dataset is built from: every data stage of an `--ablation` run reads `<run>/source`, a view of the
source tree without those files. Before any model is scored, the yardstick stage checks every item against
both arms' training data, by source path (held-out files) and with the decontamination detectors; an item any
detector flags in either arm is left out of the yardstick, for both arms, and listed.

The report gives per arm and item set the mean and standard deviation over seeds and every seed's number, the
paired per-seed difference with a 95% t-interval (K - 1 degrees of freedom) and a verdict worded only as far as
that interval allows; the compute of each arm (steps, tokens seen, parameters, wall time, unique tokens and
epochs); where each training row's lineage is recorded; a plot of the per-seed results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from recipes.reproduce import Run, Stage, filtered_code, pretrain_stage

HELDOUT_FRACTION = 0.05      # of the source tree's files, by a fixed hash of the path
HELDOUT_MAX_ITEMS = 150      # documented functions of those files in the yardstick (fixed hash order)
ITEM_SETS = ("humaneval", "mbpp", "heldout")
ARMS = {
    "filtered": {"datasets": ["filtered-code", "textbook"], "tokenizer": "tokenizer",
                 "label": "filtered + textbook"},
    "unfiltered": {"datasets": ["unfiltered-code"], "tokenizer": "tokenizer-unfiltered",
                   "label": "unfiltered"},
}
TRAINING_DATASETS = ("filtered-code", "textbook", "unfiltered-code", "exercises")


def seeds(args: argparse.Namespace) -> list[int]:
    return [args.seed + i for i in range(args.seeds)]


def pretrain_name(arm: str, seed: int, base_seed: int) -> str:
    """The stage (and folder) of one arm's pretraining; the main run's `pretrain` is the filtered arm's base seed."""
    return "pretrain" if arm == "filtered" and seed == base_seed else f"pretrain-{arm}-seed{seed}"


# ---- the held-out slice: a view of the source tree without it ----------------------------------------


def source_files(source: str | os.PathLike | None) -> tuple[Path, list[Path]]:
    """(root, every .py file the data stages would read), as `datasets_builders.sources.LocalPythonFiles` lists them."""
    from datasets_builders.sources import LocalPythonFiles

    files = LocalPythonFiles(source)
    return files.root, files.paths()


def heldout_view(run_dir: Path, source: str | os.PathLike | None) -> Path:
    """`<run_dir>/source`: symbolic links to every file of `source` (default: the standard library) except the
    held-out slice, which `<run_dir>/yardstick/heldout_files.json` lists. Idempotent; the data stages read it."""
    from evaluation.bits_per_byte import heldout_selected

    root, paths = source_files(source)
    view, manifest = run_dir / "source", run_dir / "yardstick" / "heldout_files.json"
    rels = [str(p.relative_to(root)) for p in paths]
    heldout = [r for r in rels if heldout_selected(r, HELDOUT_FRACTION)]
    record = {"root": str(root), "fraction": HELDOUT_FRACTION, "files": len(rels), "heldout": heldout}
    if manifest.is_file() and json.loads(manifest.read_text()) == record and view.is_dir():
        return view
    # The view's records keep the original tree's ids and provenance (source name, license): see the readers.
    from datasets_builders.sources import SOURCE_DECLARATION, source_identity

    name, license = source_identity(source)
    view.mkdir(parents=True, exist_ok=True)
    (view / SOURCE_DECLARATION).write_text(json.dumps({"source": name, "license": license}))
    if not heldout:
        raise ValueError(f"{root}: none of its {len(rels)} .py files falls in the held-out slice "
                         f"({HELDOUT_FRACTION:.0%} by path hash); give a larger --source for --ablation")
    held = set(heldout)
    for rel, path in zip(rels, paths):
        link = view / rel
        if rel in held:
            link.unlink(missing_ok=True)
        elif not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, link)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(record, indent=1))
    return view


# ---- stages -----------------------------------------------------------------------------------------


def tokenizer_unfiltered(run: Run) -> dict[str, Any]:
    from datasets_builders.tokenizer import train_tokenizer

    source, out = run.path("datasets", "unfiltered-code"), run.path("tokenizer-unfiltered")
    tok = train_tokenizer([source], out, vocab_size=run.args.vocab_size)
    return {"input": str(source), "output": str(out), "vocab_size": len(tok)}


def _training_rows(run: Run, name: str) -> list[dict[str, Any]]:
    from datasets_builders.packing import load_any_dataset

    return load_any_dataset(run.path("datasets", name)).to_list()


def yardstick(run: Run) -> dict[str, Any]:
    """The items every model is scored on: candidates from HumanEval, MBPP and the held-out files, minus every
    item found in either arm's training data (by source path, then by the decontamination detectors)."""
    from datasets_builders.benchmark_index import BenchmarkItem
    from datasets_builders.decontaminate import build_detectors, scan
    from evaluation.bits_per_byte import benchmark_items, heldout_items, write_items

    manifest = json.loads(run.path("yardstick", "heldout_files.json").read_text())
    root, heldout = Path(manifest["root"]), manifest["heldout"]
    candidates = [*benchmark_items("humaneval"), *benchmark_items("mbpp"),
                  *heldout_items(((rel, (root / rel).read_text(encoding="utf-8")) for rel in heldout),
                                 max_items=HELDOUT_MAX_ITEMS)]
    # By id: no training row of either arm comes from a held-out file.
    rows_of_text: dict[str, list[tuple[str, str, str]]] = {}  # each distinct text is scanned once
    paths = {}
    for arm, spec in ARMS.items():
        for name in spec["datasets"]:
            rows = _training_rows(run, name)
            paths[name] = {str(r.get("path")) for r in rows}
            for r in rows:
                rows_of_text.setdefault(r["text"], []).append((arm, name, str(r.get("path") or r.get("id"))))
    texts = list(rows_of_text)
    leaked = {name: sorted(set(heldout) & p) for name, p in paths.items() if set(heldout) & p}
    if leaked:
        raise RuntimeError(f"held-out files in training data: {leaked}; {run.path('source')} must not hold them "
                           "(delete the run directory and start again)")
    # By the decontamination detectors (AST uncalibrated: calibrating on the training data would hide matches).
    bench = [BenchmarkItem(benchmark=i.set, item_id=i.id, statement=i.prompt, solution=i.prompt + i.completion,
                           entry=i.id.rsplit(":", 1)[-1] if i.set == "heldout" else "") for i in candidates]
    detectors = build_detectors(run.args.detectors, bench, calibration_corpus=None, embedding_cache=run.path("cache"),
                                embedding_precision=run.args.embedding_precision,
                                embedding_device=run.args.embedding_device)
    flagged: dict[str, list[dict[str, Any]]] = {}
    for m in scan(texts, detectors):
        if m.counts(0.8):
            for arm, name, where in rows_of_text[texts[m.row]]:
                flagged.setdefault(candidates[m.item].id, []).append(
                    {"arm": arm, "dataset": name, "row": where, "detector": m.detector, "score": m.score})
    items = [i for i in candidates if i.id not in flagged]
    write_items(run.path("yardstick", "items.jsonl"), items)
    run.path("yardstick", "excluded.json").write_text(json.dumps(flagged, indent=1))
    count = lambda xs: {s: sum(1 for i in xs if i.set == s) for s in ITEM_SETS}  # noqa: E731
    return {"input": [str(run.path("datasets", d)) for a in ARMS.values() for d in a["datasets"]],
            "output": str(run.path("yardstick", "items.jsonl")), "rows": len(items), "removed_rows": len(flagged),
            "candidates": count(candidates), "items": count(items), "heldout_files": heldout,
            "detectors": list(run.args.detectors), "scanned_rows": sum(map(len, rows_of_text.values())),
            "scanned_texts": len(texts),
            "excluded": {k: sorted({f"{h['arm']}:{h['detector']}" for h in v}) for k, v in flagged.items()}}


def bits_per_byte_stage(run: Run, arm: str, seed: int) -> dict[str, Any]:
    from evaluation.bits_per_byte import evaluate_model, read_items

    model = run.path(pretrain_name(arm, seed, run.args.seed), "final")
    out = run.path("eval-bpb", arm, f"seed{seed}")
    results = evaluate_model(model, read_items(run.path("yardstick", "items.jsonl")), out)
    return {"input": str(model), "output": str(out), "arm": arm, "seed": seed, "results": results}


def lineage(run: Run) -> dict[str, Any]:
    """Every training row's source (file path / prompt seed / teacher request) and filter decisions: counted,
    and where to find them. A row with no source is an error."""
    from datasets_builders.hub_dataset import read_build_info

    report = {}
    for name in TRAINING_DATASETS:
        folder = run.path("datasets", name)
        if not folder.is_dir():
            continue
        rows = _training_rows(run, name)
        columns = list(rows[0]) if rows else []
        untraced = [r.get("id") for r in rows if not (r.get("path") or r.get("seed_path") or r.get("generation_prompt"))]
        if untraced:
            raise RuntimeError(f"{folder}: {len(untraced)} rows without a source path, prompt seed or teacher prompt "
                               f"(first ids: {untraced[:3]})")
        info = read_build_info(folder)
        report[name] = {
            "rows": len(rows), "traced": len(rows),
            "source_columns": [c for c in ("source", "path", "symbol", "lineno", "seed_path", "seed_symbol",
                                           "generator", "generation_prompt", "request_hash") if c in columns],
            "decision_columns": [c for c in ("duplicate_count", "edu_score", "edu_label", "quality_score", "verified",
                                             "decontamination") if c in columns],
            "removed": str(folder / "removed") if (folder / "removed").is_dir() else None,
            "removed_by_reason": info.get("removed_by_reason") or {},
        }
    return {"output": str(run.path("datasets")), "datasets": report}


def stages(args: argparse.Namespace) -> list[Stage]:
    """The ablation's stages after the main run's: the unfiltered corpus and its tokenizer, the yardstick,
    then per seed each arm's pretraining and bits per byte."""
    plan = [
        Stage("unfiltered-code", lambda r: filtered_code(r, quality_filter=False),
              "held-out-free source -> pre-filters only (ablation: no quality filter, no textbook)"),
        Stage("tokenizer-unfiltered", tokenizer_unfiltered, "train a byte-level BPE on the unfiltered corpus"),
        Stage("yardstick", yardstick, "HumanEval / MBPP / held-out items absent from both arms' training data"),
        Stage("lineage", lineage, "check every training row's source and filter decisions"),
    ]
    for seed in seeds(args):
        for arm in ARMS:
            name = pretrain_name(arm, seed, args.seed)
            if name != "pretrain":
                plan.append(Stage(name, lambda r, a=arm, s=seed, n=name: pretrain_stage(
                    r, ARMS[a]["datasets"], n, tokenizer=ARMS[a]["tokenizer"], seed=s),
                    f"pretrain the {arm} arm, seed {seed} (same compute)"))
            plan.append(Stage(f"bpb-{arm}-seed{seed}", lambda r, a=arm, s=seed: bits_per_byte_stage(r, a, s),
                              f"bits per byte of the {arm} arm, seed {seed}, on the yardstick"))
    return plan


# ---- statistics and the report section ----------------------------------------------------------------


def paired_interval(differences: list[float], confidence: float = 0.95) -> dict[str, float | int | None]:
    """Mean of paired differences, their standard deviation and the t-interval half-width (n - 1 dof)."""
    from scipy import stats

    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "half_width": None, "low": None, "high": None}
    sd = statistics.stdev(differences)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "half_width": half, "low": mean - half, "high": mean + half}


def verdict(interval: dict[str, Any], what: str = "bits/byte") -> str:
    """The claim the interval allows about `unfiltered - filtered` (positive: filtered + textbook lower)."""
    n, mean, half = interval["n"], interval["mean"], interval["half_width"]
    if half is None:
        return f"one seed per arm: difference {mean:+.3f} {what}, no interval, no verdict"
    if interval["low"] > 0:
        return f"filtered + textbook lower by {mean:.3f} ± {half:.3f} {what} (95% t-interval, {n} paired seeds)"
    if interval["high"] < 0:
        return f"filtered + textbook higher by {-mean:.3f} ± {half:.3f} {what} (95% t-interval, {n} paired seeds)"
    return (f"no difference resolved: unfiltered - filtered = {mean:+.3f} ± {half:.3f} {what} "
            f"(95% t-interval, {n} paired seeds, includes 0)")


def collect(summaries: dict[str, dict[str, Any]]) -> dict[str, dict[int, dict[str, float]]]:
    """{arm: {seed: {item set: bits per byte}}} from the bits-per-byte stages."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for name, s in summaries.items():
        if name.startswith("bpb-") and "results" in s:
            sets = s["results"]["sets"]
            out.setdefault(s["arm"], {})[s["seed"]] = {k: v["bits_per_byte"] for k, v in sets.items()}
    return out


def comparison(results: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per item set: each arm's mean / sd / points over seeds, and the paired interval over common seeds."""
    out = {}
    common = sorted(set(results.get("filtered", {})) & set(results.get("unfiltered", {})))
    for item_set in (*ITEM_SETS, "all"):
        arms = {}
        for arm in ARMS:
            points = [results.get(arm, {}).get(s, {}).get(item_set) for s in common]
            points = [p for p in points if p is not None]
            arms[arm] = {"mean": statistics.fmean(points) if points else None,
                         "sd": statistics.stdev(points) if len(points) > 1 else None, "points": points}
        if len(arms["filtered"]["points"]) == len(arms["unfiltered"]["points"]) == len(common) and common:
            diffs = [u - f for f, u in zip(arms["filtered"]["points"], arms["unfiltered"]["points"])]
            interval = paired_interval(diffs)
            out[item_set] = {"seeds": common, "arms": arms, "differences": diffs, "interval": interval,
                             "verdict": verdict(interval)}
    return out


def _pm(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")


def compute_rows(run_dir: Path, summaries: dict[str, dict[str, Any]], seed_list: list[int], base_seed: int) -> list[list[Any]]:
    """Per arm: steps, tokens seen, parameters, mean wall time, unique training tokens, epochs."""
    rows = []
    for arm, spec in ARMS.items():
        names = [pretrain_name(arm, s, base_seed) for s in seed_list if pretrain_name(arm, s, base_seed) in summaries]
        if not names:
            continue
        cfg = json.loads((run_dir / names[0] / "train_config.json").read_text())
        steps, tokens_seen = cfg["max_steps"], cfg["max_steps"] * cfg["global_batch_size"] * cfg["seq_len"]
        packed = json.loads((run_dir / "packed" / names[0] / "build_info.json").read_text())
        unique = sum(src["train_tokens"] for src in packed["sources"])
        bpb = [summaries[f"bpb-{arm}-seed{s}"]["results"] for s in seed_list if f"bpb-{arm}-seed{s}" in summaries]
        params = bpb[0].get("parameters") if bpb else None
        seconds = [summaries[n].get("seconds") for n in names if summaries[n].get("seconds") is not None]
        rows.append([spec["label"], " + ".join(spec["datasets"]), steps, f"{tokens_seen:,}",
                     f"{params:,}" if params else "-", f"{statistics.fmean(seconds):.0f}" if seconds else "-",
                     f"{unique:,}", f"{tokens_seen / unique:.2f}", packed.get("vocab_size")])
    return rows


def plot(comp: dict[str, dict[str, Any]], path: Path) -> Path:
    """One panel per item set: each seed's bits per byte for both arms, paired seeds joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [s for s in (*ITEM_SETS, "all") if s in comp]
    fig, axes = plt.subplots(1, len(sets), figsize=(3.2 * len(sets), 3.4), squeeze=False)
    for ax, item_set in zip(axes[0], sets):
        c = comp[item_set]
        f, u = c["arms"]["filtered"]["points"], c["arms"]["unfiltered"]["points"]
        for seed, a, b in zip(c["seeds"], f, u):
            ax.plot([0, 1], [a, b], "-o", color="tab:gray", alpha=0.6, markersize=4)
            ax.annotate(f"s{seed}", (1, b), xytext=(4, 0), textcoords="offset points", fontsize=7)
        for x, points in ((0, f), (1, u)):
            ax.errorbar([x], [statistics.fmean(points)], yerr=[statistics.stdev(points)] if len(points) > 1 else None,
                        fmt="s", color="tab:red", capsize=4, markersize=6)
        ax.set_xticks([0, 1], [ARMS["filtered"]["label"], ARMS["unfiltered"]["label"]], fontsize=8)
        ax.set_xlim(-0.4, 1.4)
        ax.set_title(f"{item_set} (n seeds {len(f)})", fontsize=9)
        ax.set_ylabel("bits per byte (lower is better)", fontsize=8)
    fig.suptitle("Per-seed bits per byte; red: mean ± sd", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ablation_section(run_dir: Path, summaries: dict[str, dict[str, Any]]) -> str:
    """The report's ablation section, from the stage markers alone."""
    seed_list = sorted({s["seed"] for n, s in summaries.items() if n.startswith("bpb-") and "seed" in s})
    base_seed = min(seed_list) if seed_list else 0
    comp = comparison(collect(summaries))
    if not comp:
        return "(no bits-per-byte results: the ablation's stages did not run)"
    y = summaries.get("yardstick", {})
    rows = []
    for item_set in (*ITEM_SETS, "all"):
        if item_set not in comp:
            continue
        c, i = comp[item_set], comp[item_set]["interval"]
        items = (y.get("items") or {}).get(item_set, sum((y.get("items") or {}).values()))
        rows.append([item_set, items, _pm(c["arms"]["filtered"]["mean"], c["arms"]["filtered"]["sd"]),
                     _pm(c["arms"]["unfiltered"]["mean"], c["arms"]["unfiltered"]["sd"]),
                     ", ".join(f"{v:+.4f}" for v in c["differences"]),
                     "-" if i["half_width"] is None else f"[{i['low']:+.4f}, {i['high']:+.4f}]"])
    header = ["items", "n", f"{ARMS['filtered']['label']} (mean ± sd)", f"{ARMS['unfiltered']['label']} (mean ± sd)",
              "per-seed unfiltered - filtered", "95% t-interval"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    points = ["| arm | item set | " + " | ".join(f"seed {s}" for s in comp["all"]["seeds"]) + " |",
              "|---|---|" + "---|" * len(comp["all"]["seeds"])]
    for arm in ARMS:
        for item_set in comp:
            points.append(f"| {ARMS[arm]['label']} | {item_set} | "
                          + " | ".join(f"{v:.4f}" for v in comp[item_set]["arms"][arm]["points"]) + " |")
    png = plot(comp, run_dir / "images" / "ablation-bits-per-byte.png")
    compute = compute_rows(run_dir, summaries, seed_list, base_seed)
    compute_table = ["| arm | data | steps | tokens seen | parameters | wall s / seed | unique train tokens | epochs | vocab |",
                     "|---|---|---|---|---|---|---|---|---|"] + ["| " + " | ".join(str(v) for v in r) + " |" for r in compute]
    excluded = y.get("excluded") or {}
    cand = y.get("candidates") or {}
    lin = summaries.get("lineage", {}).get("datasets", {})
    lineage_rows = ["| dataset | rows traced | source columns | filter-decision columns | removed rows (where) |",
                    "|---|---|---|---|---|"]
    for name, d in lin.items():
        removed = sum(d["removed_by_reason"].values()) if d["removed_by_reason"] else 0
        lineage_rows.append(f"| {name} | {d['traced']}/{d['rows']} | {', '.join(d['source_columns'])} | "
                            f"{', '.join(d['decision_columns']) or '-'} | {removed} ({d['removed'] or 'counts in build_info.json'}) |")
    verdict_all = comp["all"]["verdict"]
    return "\n".join([
        f"**Verdict (all items, bits per byte):** {verdict_all}.",
        "",
        "Per item set: " + "; ".join(f"{k}: {v['verdict']}" for k, v in comp.items() if k != "all") + ".",
        "",
        "Bits per byte = summed completion NLL / (ln 2 x UTF-8 bytes of the completion), each model with its own "
        "tokenizer on the same items (`evaluation/bits_per_byte.py`; per item in `eval-bpb/<arm>/seed<s>/per_item.jsonl`). "
        "The interval is over seeds (initialisation and data order) for these data builds and this yardstick; it says "
        "nothing about other corpora, larger models or other item choices. The arms are pretrained only (no finetune).",
        "",
        *lines,
        "",
        f"![per-seed bits per byte](images/{png.name})",
        "",
        *points,
        "",
        "### Same compute",
        "",
        *compute_table,
        "",
        "Tokens seen = steps x global batch x sequence length (identical for both arms); unique train tokens = the "
        "packed training split of the arm's corpus with its own tokenizer (first seed); epochs = tokens seen / unique tokens.",
        "",
        "### The yardstick's items",
        "",
        f"Candidates: {', '.join(f'{k} {v}' for k, v in cand.items())}; held-out files (excluded from every corpus "
        f"before anything was built, `yardstick/heldout_files.json`): {len(y.get('heldout_files') or [])}. "
        f"Checked against {y.get('scanned_rows')} training rows of both arms: no row comes from a held-out file (by "
        f"path), and the detectors ({', '.join(y.get('detectors') or [])}; AST uncalibrated) flagged "
        f"{len(excluded)} item(s), left out for both arms (`yardstick/excluded.json`): "
        + (", ".join(f"{k} ({', '.join(v)})" for k, v in sorted(excluded.items())[:30]) or "none")
        + (" …" if len(excluded) > 30 else "") + ".",
        "",
        "### Lineage: where each training row comes from",
        "",
        *lineage_rows,
        "",
        "Each dataset folder's Parquet rows carry the columns above (file `source` + `path` (+ `symbol`, `lineno`) for "
        "mined and filtered rows; `seed_path` / `generation_prompt` for teacher rows); every row a filter removed is "
        "under `removed/` with `removed_by` and `removed_reason`; counts per reason are in `build_info.json`.",
    ])
