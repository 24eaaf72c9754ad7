"""The filtered code corpus: readers, pre-filters, dedup, annotators, embedder, classifier, the datatrove pipeline
on every executor, resume after a kill, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from benchmarks.filtered_code import synthetic_code_corpus
from datasets_builders.annotate.classifier import QualityClassifier, QualityFilter, Threshold, threshold_for
from datasets_builders.annotate.judge import ChooseSample, HeuristicAnnotator, LLMJudge, SampleKeys, parse_score
from datasets_builders.embedder import Embedder
from datasets_builders.filters.dedup import id_priority
from datasets_builders.hub_dataset import read_build_info
from datasets_builders.pipelines.executors import ExecutorOptions
from datasets_builders.pipelines.filtered_code import build_filtered_code
from datasets_builders.readers import TableReader, contiguous_shard, make_reader
from datasets_builders.sources import LocalPythonFiles, stdlib_root
from tests.serving import served_model  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
# A varied slice of the standard library: small enough for a test, large enough for a classifier.
STDLIB_SAMPLE = ["abc.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py", "glob.py", "graphlib.py", "keyword.py",
                 "linecache.py", "numbers.py", "operator.py", "queue.py", "random.py", "reprlib.py", "sched.py",
                 "shlex.py", "statistics.py", "string.py", "textwrap.py", "this.py", "token.py", "tty.py", "uu.py",
                 "wave.py", "weakref.py", "xdrlib.py", "fractions.py", "difflib.py", "dataclasses.py",
                 "contextlib.py", "copy.py", "csv.py", "functools.py", "getopt.py", "gettext.py", "html/parser.py",
                 "json/encoder.py", "json/decoder.py", "json/scanner.py", "calendar.py", "base64.py", "bdb.py",
                 "chunk.py", "cmd.py", "code.py"]


def code(name: str, body: str = "x = 1") -> str:
    return f'"""Module {name}."""\n\n\ndef {name}(values):\n    """Sum the values."""\n    total = 0\n' \
           f"    for v in values:\n        total += v\n    return total\n\n{body}\n"


def stdlib_sample(folder: Path) -> Path:
    for rel in STDLIB_SAMPLE:
        src = stdlib_root() / rel
        if src.is_file():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(src.read_bytes())
    return folder


def parquet_rows(folder: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for f in sorted(folder.glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def kept_ids(out: Path) -> list[str]:
    return sorted(r["id"] for r in parquet_rows(out / "data"))


def removed_reasons(out: Path) -> dict[str, tuple[str, str]]:
    return {r["id"]: (r["removed_by"], r["removed_reason"]) for r in parquet_rows(out / "removed")}


def check_counts(out: Path) -> dict:
    """count in = kept + removed, and no id twice."""
    info = read_build_info(out)
    kept, removed = kept_ids(out), list(removed_reasons(out))
    assert info["count_check"]["read"] == info["count_check"]["kept_plus_removed"] == len(kept) + len(removed)
    assert len(set(kept) | set(removed)) == len(kept) + len(removed)
    return info


# ---------------------------------------------------------------- readers and bad input

def test_bad_files_are_removed_with_their_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.py").write_text(code("good", "\n".join(f"y{i} = {i} * 2" for i in range(30))))
    (src / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (src / "blob.py").write_bytes(b"x = 1\n\x00\x01\x02binary")
    (src / "empty.py").write_bytes(b"  \n")
    (src / "huge.py").write_bytes(b"x = 1\n" * 2000)
    (src / "dangling.py").symlink_to(tmp_path / "does-not-exist.py")  # root can read anything; a broken link cannot be
    files = LocalPythonFiles(src, max_bytes=10_000)
    assert [r["path"] for r in files] == ["good.py"]
    assert dict(files.skipped) == {"not_utf8": 1, "binary": 1, "empty": 1, "too_large": 1, "unreadable": 1}

    # The unfiltered corpus of the ablation: pre-filters and dedup only, no embedder, no classifier.
    out = build_filtered_code(src, tmp_path / "out", quality_filter=False, max_bytes=10_000, min_chars=50)
    info = check_counts(out)
    assert info["rows"] == 1 and not (out / "classifier").exists()
    assert "without the quality filter" in (out / "README.md").read_text()
    assert {by for by, _ in removed_reasons(out).values()} == {"readable"}
    assert sorted(reason for _, reason in removed_reasons(out).values()) == [
        "binary", "empty", "not_utf8", "too_large", "unreadable"]
    assert info["removed_by_reason"] == {f"readable:{r}": 1 for r in ("binary", "empty", "not_utf8", "too_large",
                                                                       "unreadable")}


def test_table_reader_keeps_provenance_and_marks_bad_rows(tmp_path):
    rows = [{"content": code("a"), "max_stars_repo_path": "a/a.py", "max_stars_repo_licenses": ["MIT"], "stars": 3},
            {"content": "", "max_stars_repo_path": "b.py"}, {"content": None}, {"content": "x\x00y"}]
    jsonl = tmp_path / "code.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = list(TableReader(jsonl).run())
    assert [d.metadata.get("unreadable") for d in docs] == [None, "empty", "empty", "binary"]
    doc = docs[0]
    assert doc.text == rows[0]["content"] and "content" not in doc.metadata
    assert (doc.metadata["path"], doc.metadata["license"], doc.metadata["stars"], doc.metadata["source"]) == \
        ("a/a.py", "MIT", 3, str(jsonl))
    assert len({d.id for d in docs}) == 4

    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "tables"
    folder.mkdir()
    for part in range(3):
        pq.write_table(pa.Table.from_pylist([{"id": f"r{part}{i}", "code": code(f"f{i}")} for i in range(2)]),
                       folder / f"part-{part}.parquet")
    reader = TableReader(folder, content_column="code")
    by_task = [[d.id for d in reader.run(rank=r, world_size=2)] for r in range(2)]
    assert by_task == [["r00", "r01"], ["r10", "r11", "r20", "r21"]]  # contiguous blocks of whole files
    assert contiguous_shard(list(range(10)), 3, 4) == [7, 8, 9]


def test_bad_json_line_names_file_and_line(tmp_path):
    jsonl = tmp_path / "code.jsonl"
    jsonl.write_text(json.dumps({"content": code("a")}) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"code.jsonl:2: not a JSON object per line"):
        list(TableReader(jsonl).run())


def test_hub_source_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((ConnectionError, FileNotFoundError), match="bigcode/the-stack-dedup: not a local path"):
        make_reader("bigcode/the-stack-dedup", "content", data_dir="data/python")


def test_missing_content_column_names_it_and_the_columns(tmp_path):
    jsonl = tmp_path / "code.jsonl"
    jsonl.write_text(json.dumps({"code": "x = 1", "repo": "r"}) + "\n")
    with pytest.raises(ValueError, match=r"no content column 'content'.*\['code', 'repo'\]"):
        list(TableReader(jsonl, content_column="content").run())
    # Through the CLI: one line naming the file and the columns, no traceback.
    from recipes import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["data", "filtered-code", "--input", str(jsonl), "--content-column", "source_code",
                  "--output", str(tmp_path / "out")])
    message = str(exit_.value.code)
    assert message.startswith("phi filtered-code: error: ") and "\n" not in message
    assert "no content column 'source_code'" in message and "['code', 'repo']" in message and str(jsonl) in message


# ---------------------------------------------------------------- pre-filters and dedup

def test_prefilters_and_dedup_remove_with_reasons(tmp_path):
    base = code("mean", "\n".join(f"print(mean([{i}, {i + 1}]))" for i in range(40)))
    # Of exact copies the one whose id hashes highest stays (a choice no task split can change), here the later one.
    from datatrove.data import Document

    priority = lambda doc_id: id_priority(Document(text="", id=doc_id))  # noqa: E731
    exact_id = next(f"exact{i}" for i in range(100) if priority(f"exact{i}") > priority("ok"))
    records = [
        {"id": "ok", "text": base},
        {"id": "py2", "text": code("p") + "print 'hello'\n"},
        {"id": "short", "text": "x = 1\n"},
        {"id": "gen", "text": "# Code generated by protoc. DO NOT EDIT.\n" + code("g")},
        {"id": "data", "text": "TABLE = [\n" + "".join(f"    '{'abcdefgh' * 3}{i}',\n" for i in range(60)) + "]\n"},
        {"id": exact_id, "text": base.replace("\n", "   \n\n")},  # trailing spaces and blank lines only
        {"id": "near", "text": base.replace("print(mean([39, 40]))", "print(mean([39, 41]))")},
        {"id": "other", "text": code("other", "\n".join(f"z{i} = {i} ** 2 - {i}" for i in range(40)))},
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = build_filtered_code(corpus, tmp_path / "out", quality_filter=False, min_chars=50)
    check_counts(out)
    assert kept_ids(out) == sorted([exact_id, "other"])
    assert removed_reasons(out) == {"py2": ("parses", "syntax_error"), "short": ("size", "too_short"),
                                    "gen": ("generated_or_data", "generated"), "data": ("generated_or_data", "data_only"),
                                    "ok": ("exact_dedup", "exact_duplicate"), "near": ("near_dedup", "near_duplicate")}


# ---------------------------------------------------------------- annotators, sample, threshold, classifier, embedder

@pytest.mark.parametrize("reply, score", [
    ("Clear and documented.\nEducational value: 7", 7.0),
    ("**Educational value:** 8/10", 8.0),
    ("I would rate it 6 out of 10.", 6.0),
    ("Score: 3", 3.0),
    ("9", 9.0),
    ("It has 2 functions and 3 loops. Educational value: 4", 4.0),
    ("The educational value is high.", 8.0),
    ("Educational value: 12", None),
    ("lorem ipsum 1 2 3 <|endoftext|>", None),
    ("", None),
    (None, None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_heuristic_annotator_prefers_documented_algorithmic_code():
    good = (stdlib_root() / "bisect.py").read_text()
    table = "CODES = {\n" + "".join(f"    {i}: '{'x' * 30}',\n" for i in range(200)) + "}\n"
    annotator = HeuristicAnnotator()
    (good_score, features), (table_score, _) = annotator.score(good), annotator.score(table)
    assert good_score > 6 > table_score
    assert set(features) == {"documentation", "comments", "self_contained", "algorithmic", "no_large_literals"}


def test_sample_is_seeded_and_the_same_for_any_task_count(tmp_path):
    from datatrove.data import Document

    docs = [Document(text=code(f"f{i}"), id=f"r{i}") for i in range(20)]

    def chosen(seed: int, tasks: int) -> list[str]:
        folder = tmp_path / f"{seed}-{tasks}"
        for rank in range(tasks):
            assert len(list(SampleKeys(folder, 5, seed).run(iter(contiguous_shard(docs, rank, tasks)), rank))) == \
                len(contiguous_shard(docs, rank, tasks))  # every document passes
        ChooseSample(folder, 5).run()
        return json.loads((folder / "chosen.json").read_text())

    assert len(chosen(0, 1)) == 5 and chosen(0, 1) == chosen(0, 3) and chosen(0, 1) != chosen(1, 1)


def test_threshold_keeps_an_exact_fraction_with_ties_to_the_earliest(tmp_path):
    from datatrove.data import Document

    scores = [[0.2, 0.9, 0.5], [0.5, 0.5, 0.1]]  # two tasks
    assert threshold_for(np.concatenate(scores), keep_fraction=0.5) == (0.5, 2)
    assert threshold_for(np.concatenate(scores), min_score=0.5) == (0.5, 3)
    with pytest.raises(ValueError, match="keep-fraction"):
        threshold_for(np.array(scores[0]), keep_fraction=1.5)
    for rank, task in enumerate(scores):
        np.save(tmp_path / f"{rank:05d}.npy", np.array(task))
    Threshold(tmp_path, tmp_path, tasks=2, keep_fraction=0.5).run()
    kept = [[d.id for d in QualityFilter(tmp_path).run(
        iter(Document(text="x", id=f"{rank}-{i}", metadata={"quality_score": s}) for i, s in enumerate(task)), rank)]
        for rank, task in enumerate(scores)]
    assert kept == [["0-1", "0-2"], ["1-0"]]  # 0.9, then the first two of the three tied 0.5s


def test_classifier_learns_a_separable_signal_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 16)).astype(np.float32)
    y = X[:, 0] > 0
    clf = QualityClassifier(n_estimators=50, seed=0)
    metrics = clf.fit(X, y)
    assert metrics["accuracy"] > 0.8 and metrics["roc_auc"] > 0.9 and metrics["n_test"] == 50
    clf.save(tmp_path)
    assert np.array_equal(QualityClassifier.load(tmp_path).score(X), clf.score(X))
    with pytest.raises(ValueError, match="at least 2 of each"):
        QualityClassifier().fit(X[:10], np.ones(10, dtype=bool))


def test_embedder_default_and_decoder_models(tmp_path, tiny_model_dir):
    texts = ["def add(a, b):\n    return a + b\n", "SELECT * FROM t;", "def add(a, b):\n    return a + b\n"]
    embedder = Embedder(cache_dir=tmp_path, precision="fp32")  # fp32: comparable with sentence-transformers to 1e-5
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5) and np.array_equal(vectors[0], vectors[2])
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(embedder.model_id, device="cpu").encode(texts[:2], normalize_embeddings=True)
    assert np.abs(reference - vectors[:2]).max() < 1e-5  # same model, same pooling as sentence-transformers
    again = Embedder(cache_dir=tmp_path, precision="fp32")  # a new process would find the vectors on disk
    assert np.array_equal(again.embed(texts[:2]), vectors[:2]) and (again.stats["computed"], again.stats["cached"]) == (0, 2)
    decoder = Embedder(str(tiny_model_dir), batch_size=2).embed(texts)  # our phi: a causal LM, mean-pooled
    assert decoder.shape[0] == 3 and np.allclose(np.linalg.norm(decoder, axis=1), 1, atol=1e-5)


# ---------------------------------------------------------------- the pipeline, end to end

def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet")) + [folder / "score_histogram.png"]}


@pytest.mark.slow
def test_stdlib_sample_with_quality_filter_end_to_end_and_deterministic(tmp_path, tiny_model_dir):
    from datasets import load_dataset

    src = stdlib_sample(tmp_path / "stdlib")
    (src / "bisect_copy.py").write_text((src / "bisect.py").read_text())  # an exact duplicate to catch
    # Embeddings from one of our own (tiny, random) checkpoints keep this fast on a shared CPU; the default
    # embedder is checked against sentence-transformers above.
    options = dict(annotate=40, keep_fraction=0.5, seed=3, embedder=str(tiny_model_dir), embed_max_length=128,
                   n_estimators=50)
    first = build_filtered_code(src, tmp_path / "a", **options)
    info = check_counts(first)
    removed = info["removed_by_reason"]
    assert removed["exact_dedup:exact_duplicate"] == 1
    assert removed.get("generated_or_data:generated", 0) >= 1  # token.py / keyword.py say so
    assert info["rows"] == round(0.5 * info["before_quality_filter"])
    assert removed["quality:below_threshold"] == info["before_quality_filter"] - info["rows"]
    metrics = info["classifier"]["metrics"]
    assert {"accuracy", "f1", "roc_auc"} <= set(metrics) and 0 <= metrics["accuracy"] <= 1
    assert info["classifier"]["n_labelled"] == 40 and info["tokens"]["kept"] > 0
    card = (first / "README.md").read_text()
    for section in ("## Counts", "## Pipeline", "## Quality classifier", "## Tokens", "score_histogram.png"):
        assert section in card
    assert (first / "score_histogram.png").read_bytes()[:4] == b"\x89PNG"
    ds = load_dataset(str(first), split="train")
    assert len(ds) == info["rows"] and min(ds["quality_score"]) >= info["classifier"]["threshold"]
    assert sum(s is not None for s in ds["edu_score"]) > 0  # the annotated ones keep their labels
    removed_ds = load_dataset("parquet", data_files=str(first / "removed" / "*.parquet"), split="train")
    assert set(removed_ds["removed_reason"]) >= {"exact_duplicate", "below_threshold"}

    # Same seed, fresh folders and caches: byte-identical shards, classifier scores and histogram.
    second = build_filtered_code(src, tmp_path / "b", **options)
    assert digests(first) == digests(second)


def phi_data(corpus: Path, out: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "-m", "recipes.cli", "data", "filtered-code", "--input", str(corpus), "--output", str(out),
           "--content-column", "content", "--no-quality-filter", *extra]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_same_kept_ids_on_every_executor_and_after_a_kill(tmp_path):
    corpus = tmp_path / "corpus"
    planted = synthetic_code_corpus(corpus, 1600, seed=1, shard_rows=200, planted=0.03)  # 8 JSONL files
    one = build_filtered_code(corpus, tmp_path / "one", quality_filter=False, content_column="content")
    reference = kept_ids(one)
    info = check_counts(one)
    assert info["removed_by_reason"]["exact_dedup:exact_duplicate"] >= planted["exact_copies"] * 0.9
    assert info["removed_by_reason"]["near_dedup:near_duplicate"] >= planted["near_copies"] * 0.9

    four = build_filtered_code(corpus, tmp_path / "four", quality_filter=False, content_column="content",
                               executor=ExecutorOptions(tasks=4, workers=2))
    check_counts(four)
    assert kept_ids(four) == reference and len(list((four / "data").glob("*.parquet"))) == 4
    assert removed_reasons(four) == removed_reasons(one)

    ray_out = tmp_path / "ray"
    phi_data(corpus, ray_out, "--executor", "ray", "--tasks", "4", "--workers", "2")
    check_counts(ray_out)
    assert kept_ids(ray_out) == reference

    # Killed in the middle of the first stage, then started again: finished tasks are not redone.
    killed = tmp_path / "killed"
    completions = killed.with_name("killed.work") / "logs" / "prefilter" / "completions"
    proc = phi_data(corpus, killed, "--tasks", "4", "--workers", "1", wait=False)
    deadline = time.time() + 600
    while len(list(completions.glob("*"))) < 2 and time.time() < deadline:
        assert proc.poll() is None, "the run ended before the kill"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in completions.glob("*")}
    assert 2 <= len(done) < 4 and not (killed / "build_info.json").exists()
    result = phi_data(corpus, killed, "--tasks", "4", "--workers", "1")
    assert f"Skipping {len(done)} already completed tasks" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in completions.glob("*") if p.name in done} == done
    check_counts(killed)
    assert kept_ids(killed) == reference and removed_reasons(killed) == removed_reasons(one)


# ---------------------------------------------------------------- the LLM judge against a real server

class FlakyProxy:
    """A real HTTP proxy in front of the server: every `fail_every`-th request gets a 503, request number
    `hang_at` hangs past the client's timeout; the others are forwarded. Counts what it forwarded."""

    def __init__(self, upstream: str, fail_every: int = 3, hang_at: int = 5, hang_s: float = 6.0):
        import httpx

        self.lock, self.seen, self.forwarded, self.failed, self.hung = threading.Lock(), 0, [], 0, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the http.server API)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with proxy.lock:
                    proxy.seen += 1
                    n = proxy.seen
                if n == hang_at:
                    proxy.hung += 1
                    time.sleep(hang_s)
                    return self._reply(504, b"{}")
                if n % fail_every == 0:
                    proxy.failed += 1
                    return self._reply(503, b'{"error": "overloaded"}')
                response = httpx.post(upstream + self.path, content=body,
                                      headers={"Content-Type": "application/json"}, timeout=120)
                with proxy.lock:
                    proxy.forwarded.append(json.loads(body)["messages"][-1]["content"])
                self._reply(response.status_code, response.content)

            def _reply(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a hung request

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_llm_judge_through_a_flaky_server(tmp_path, served_model):  # noqa: F811 (the fixture)
    snippets = [code(f"f{i}", "\n".join(f"v{i}_{j} = f{i}([{j * i}, {j + i}])" for j in range(6))) for i in range(8)]
    direct = LLMJudge(served_model.base_url, served_model.model, concurrency=4)
    expected = direct.client.complete([direct.prompt(s) for s in snippets], system=direct.config["judge"]["system"],
                                      **direct.config["judge"]["params"])
    assert all(isinstance(r, str) for r in expected)

    cache = tmp_path / "judge-cache"
    with FlakyProxy(served_model.base_url.removesuffix("/v1"), hang_s=16) as proxy:
        judge = LLMJudge(proxy.base_url, served_model.model, cache_dir=cache, concurrency=4, timeout=15,
                         backoff=0.05, max_backoff=0.2)
        scores = judge.scores(snippets)
        assert proxy.failed >= 2 and proxy.hung == 1 and judge.client.stats["retries"] >= 3
        # Nothing lost, nothing duplicated, nothing swapped: one reply per prompt, in order, each the reply the
        # server gives that prompt without the proxy (greedy decoding). (A reply slower than the timeout on this
        # shared CPU is asked again, so the server may see a prompt twice; the output never does.)
        assert set(proxy.forwarded) == {direct.prompt(s) for s in snippets}
        assert judge.replies == expected
        assert len(scores) == len(snippets) and judge.stats["failed"] == 0
        assert judge.stats["scored"] + judge.stats["unparseable"] == len(snippets)
        assert scores == [parse_score(r) for r in expected]

        # A rerun (e.g. after a kill) asks the server for nothing: the replies come from the cache.
        forwarded = len(proxy.forwarded)
        again = LLMJudge(proxy.base_url, served_model.model, cache_dir=cache)
        assert again.scores(snippets) == scores and len(proxy.forwarded) == forwarded

    # The Annotate block with --judge-url / --judge-model: the sample is labelled, the replies stay as provenance.
    from datatrove.data import Document

    from datasets_builders.annotate.judge import Annotate

    (tmp_path / "chosen.json").write_text(json.dumps(["d0", "d2", "d3"]))
    block = Annotate(tmp_path / "chosen.json", tmp_path / "labelled", 5, served_model.base_url, served_model.model,
                     cache_dir=tmp_path / "cli-cache")
    docs = list(block.run(iter(Document(text=s, id=f"d{i}") for i, s in enumerate(snippets[:5]))))
    assert [d.id for d in docs] == [f"d{i}" for i in range(5)]
    annotated = {d.id: d.metadata["edu_annotation"] for d in docs if d.metadata["edu_annotation"] is not None}
    assert set(annotated) == {"d0", "d2", "d3"} and set(annotated.values()) <= set(expected)


def test_slurm_executor_needs_a_partition_and_sbatch(tmp_path, monkeypatch):
    from recipes import cli

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text(code("a"))
    for extra, message in ((["--executor", "slurm"], "--executor slurm needs --slurm-partition"),
                           (["--executor", "slurm", "--slurm-partition", "cpu"], "no `sbatch` on this machine")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(["data", "filtered-code", "--input", str(src), "--output", str(tmp_path / "out"), *extra])
        assert message in str(exit_.value.code) and "\n" not in str(exit_.value.code)


# ---------------------------------------------------------------- Slurm, on a one-machine Slurm

@pytest.mark.slow
def test_slurm_executor_runs_the_job_arrays_and_keeps_the_same_ids(tmp_path):
    """`--executor slurm` through datatrove's SlurmPipelineExecutor, against tests/fake_slurm.py's sbatch / srun /
    scontrol on PATH (every array task run with its SLURM_ARRAY_TASK_ID): same kept ids as one local task, one
    job array per stage chained by afterok, and a rerun submits nothing."""
    from tests.fake_slurm import install

    corpus = tmp_path / "corpus"
    synthetic_code_corpus(corpus, 300, seed=2, shard_rows=100, planted=0.05)  # 3 JSONL files
    reference = build_filtered_code(corpus, tmp_path / "local", quality_filter=False, content_column="content")
    install(tmp_path / "bin")
    env = {**os.environ, "FAKE_SLURM_STATE": str(tmp_path / "slurm"),
           "PATH": os.pathsep.join([str(tmp_path / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])}
    cmd = [sys.executable, "-m", "recipes.cli", "data", "filtered-code", "--input", str(corpus), "--output",
           str(tmp_path / "slurm-out"), "--content-column", "content", "--no-quality-filter", "--executor", "slurm",
           "--slurm-partition", "debug", "--tasks", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = json.loads((tmp_path / "slurm" / "jobs.json").read_text())
    # Each stage: its job array, then datatrove's merge-stats job (same name) after it.
    arrays = {j["name"]: j for j in jobs.values() if "launch_pickled_pipeline" in j["script"]}
    assert list(arrays) == ["phi-prefilter", "phi-exact-find", "phi-minhash-signatures", "phi-minhash-buckets",
                            "phi-minhash-cluster", "phi-dedup", "phi-finalize"]
    assert all(j["state"] == "COMPLETED" for j in jobs.values())
    assert arrays["phi-prefilter"]["array"] == [0, 1, 2] and arrays["phi-exact-find"]["array"] == [0]
    ids = [k for k, j in jobs.items() if "launch_pickled_pipeline" in j["script"]]
    assert all(jobs[b]["dependency"] == f"afterok:{a}" for a, b in zip(ids, ids[1:]))
    assert sum("merge_stats" in j["script"] for j in jobs.values()) == len(arrays)
    check_counts(tmp_path / "slurm-out")
    assert kept_ids(tmp_path / "slurm-out") == kept_ids(reference)
    assert removed_reasons(tmp_path / "slurm-out") == removed_reasons(reference)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert again.returncode == 0 and "already complete with these options" in again.stdout
    assert json.loads((tmp_path / "slurm" / "jobs.json").read_text()) == jobs  # nothing submitted

    # A builder that writes its card in the driver (mined exercises): written once every job array finished.
    from datasets_builders.exercises import build_exercises

    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("textwrap.py", "shlex.py", "colorsys.py"):
        (lib / name).write_bytes((stdlib_root() / name).read_bytes())
    local = build_exercises(tmp_path / "ex-local", n=None, source_root=lib, embed=False)
    cmd = [sys.executable, "-m", "recipes.cli", "data", "exercises", "--output", str(tmp_path / "ex-slurm"), "--n", "0",
           "--source-root", str(lib), "--no-embeddings", "--executor", "slurm", "--slurm-partition", "debug",
           "--tasks", "2"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert parquet_rows(tmp_path / "ex-slurm" / "data") == parquet_rows(local / "data")
    assert read_build_info(tmp_path / "ex-slurm")["removed_by_reason"] == read_build_info(local)["removed_by_reason"]
