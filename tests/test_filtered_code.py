"""The filtered code corpus: sources, pre-filters, annotators, embedder, classifier, the builder and its CLI."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from datasets_builders.annotators import Annotate, HeuristicAnnotator, LLMJudge, parse_score
from datasets_builders.embedder import Embedder
from datasets_builders.filtered_code import build_filtered_code
from datasets_builders.hub_dataset import read_build_info
from datasets_builders.pipeline import run_pipeline
from datasets_builders.prefilters import default_prefilters
from datasets_builders.quality_classifier import QualityClassifier, select
from datasets_builders.sources import TableRows, open_source, stdlib_root
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


# ---------------------------------------------------------------- sources and bad input

def test_bad_files_are_skipped_and_counted_by_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.py").write_text(code("good", "\n".join(f"y{i} = {i} * 2" for i in range(30))))
    (src / "latin1.py").write_bytes("# caf\xe9\nx = 1\n".encode("latin-1"))
    (src / "blob.py").write_bytes(b"x = 1\n\x00\x01\x02binary")
    (src / "empty.py").write_bytes(b"  \n")
    (src / "huge.py").write_bytes(b"x = 1\n" * 2000)
    (src / "dangling.py").symlink_to(tmp_path / "does-not-exist.py")  # root can read anything; a broken link cannot be
    source = open_source(src, max_bytes=10_000)
    assert [r["path"] for r in source] == ["good.py"]
    assert dict(source.skipped) == {"not_utf8": 1, "binary": 1, "empty": 1, "too_large": 1, "unreadable": 1}

    # keep_fraction=1.0: the unfiltered corpus of the ablation -- pre-filters only, no embedder, no classifier.
    out = build_filtered_code(src, tmp_path / "out", keep_fraction=1.0, max_bytes=10_000, min_chars=50)
    assert read_build_info(out)["rows"] == 1 and not (out / "classifier").exists()
    assert "without the quality filter" in (out / "README.md").read_text()
    stages = read_build_info(out)["stages"]
    assert stages["source"] == {"read": 1, "skipped:not_utf8": 1, "skipped:binary": 1, "skipped:empty": 1,
                                "skipped:too_large": 1, "skipped:unreadable": 1}


def test_table_sources_keep_provenance_and_skip_bad_rows(tmp_path):
    rows = [{"content": code("a"), "max_stars_repo_path": "a/a.py", "max_stars_repo_licenses": ["MIT"], "stars": 3},
            {"content": "", "max_stars_repo_path": "b.py"}, {"content": None}, {"content": "x\x00y"}]
    jsonl = tmp_path / "code.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    records = list(source := TableRows(jsonl))
    assert len(records) == 1 and dict(source.skipped) == {"empty": 2, "binary": 1}
    record = records[0]
    assert record["text"] == rows[0]["content"] and "content" not in record
    assert (record["path"], record["license"], record["stars"], record["source"]) == ("a/a.py", "MIT", 3, str(jsonl))

    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "code.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": f"r{i}", "code": code(f"f{i}")} for i in range(4)]), parquet)
    shard = list(TableRows(parquet, content_column="code", num_shards=2, shard_index=1))
    assert [r["id"] for r in shard] == ["r1", "r3"]


def test_hub_source_offline_is_one_clear_error():
    with pytest.raises((ConnectionError, FileNotFoundError), match="bigcode/the-stack-dedup: not a local path"):
        list(open_source("bigcode/the-stack-dedup", "content", data_dir="data/python"))


def test_missing_content_column_names_it_and_the_columns(tmp_path):
    jsonl = tmp_path / "code.jsonl"
    jsonl.write_text(json.dumps({"code": "x = 1", "repo": "r"}) + "\n")
    with pytest.raises(ValueError, match=r"no content column 'content'.*\['code', 'repo'\]"):
        list(TableRows(jsonl, content_column="content"))
    # Through the CLI: one line naming the file and the columns, no traceback.
    from recipes import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["data", "filtered-code", "--input", str(jsonl), "--content-column", "source_code",
                  "--output", str(tmp_path / "out")])
    message = str(exit_.value.code)
    assert message.startswith("phi filtered-code: error: ") and "\n" not in message
    assert "no content column 'source_code'" in message and "['code', 'repo']" in message and str(jsonl) in message


# ---------------------------------------------------------------- pre-filters

def test_prefilters_remove_with_reasons_and_keep_first_copies():
    base = code("mean", "\n".join(f"print(mean([{i}, {i + 1}]))" for i in range(40)))
    records = [
        {"id": "ok", "text": base},
        {"id": "py2", "text": code("p") + "print 'hello'\n"},
        {"id": "short", "text": "x = 1\n"},
        {"id": "gen", "text": "# Code generated by protoc. DO NOT EDIT.\n" + code("g")},
        {"id": "data", "text": "TABLE = [\n" + "".join(f"    '{'abcdefgh' * 3}{i}',\n" for i in range(60)) + "]\n"},
        {"id": "exact", "text": base.replace("\n", "   \n\n")},  # trailing spaces and blank lines only
        {"id": "near", "text": base.replace("print(mean([39, 40]))", "print(mean([39, 41]))")},
        {"id": "other", "text": code("other", "\n".join(f"z{i} = {i} ** 2 - {i}" for i in range(40)))},
    ]
    result = run_pipeline(default_prefilters(seed=0, min_chars=50), records)
    assert [r["id"] for r in result.kept] == ["ok", "other"]
    reasons = {r["id"]: (r["removed_by"], r["removed_reason"], r.get("duplicate_of")) for r in result.removed}
    assert reasons == {"py2": ("parses", "syntax_error", None), "short": ("size", "too_short", None),
                       "gen": ("generated_or_data", "generated", None), "data": ("generated_or_data", "data_only", None),
                       "exact": ("exact_dedup", "exact_duplicate", "ok"), "near": ("near_dedup", "near_duplicate", "ok")}
    assert result.stats["near_dedup"] == {"in": 3, "kept": 2, "removed:near_duplicate": 1}


# ---------------------------------------------------------------- annotators, classifier, embedder

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


def test_annotate_samples_deterministically():
    records = [{"id": f"r{i}", "text": code(f"f{i}")} for i in range(20)]
    picked = [[r["id"] for r in Annotate(HeuristicAnnotator(), 5, seed).run([dict(r) for r in records])
               if r["edu_score"] is not None] for seed in (0, 0, 1)]
    assert len(picked[0]) == 5 and picked[0] == picked[1] and picked[0] != picked[2]


def test_select_exact_fraction_with_deterministic_ties():
    scores = np.array([0.2, 0.9, 0.5, 0.5, 0.5, 0.1])
    mask, threshold = select(scores, keep_fraction=0.5)
    assert mask.tolist() == [False, True, True, True, False, False] and threshold == 0.5
    mask, threshold = select(scores, min_score=0.5)
    assert mask.sum() == 4 and threshold == 0.5
    with pytest.raises(ValueError, match="keep-fraction"):
        select(scores, keep_fraction=1.5)


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
    embedder = Embedder(cache_dir=tmp_path)
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5) and np.array_equal(vectors[0], vectors[2])
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(embedder.model_id, device="cpu").encode(texts[:2], normalize_embeddings=True)
    assert np.abs(reference - vectors[:2]).max() < 1e-5  # same model, same pooling as sentence-transformers
    again = Embedder(cache_dir=tmp_path)  # a new process would find the vectors on disk
    assert np.array_equal(again.embed(texts[:2]), vectors[:2]) and again.stats == {"computed": 0, "cached": 2}
    decoder = Embedder(str(tiny_model_dir), batch_size=2).embed(texts)  # our phi: a causal LM, mean-pooled
    assert decoder.shape[0] == 3 and np.allclose(np.linalg.norm(decoder, axis=1), 1, atol=1e-5)


# ---------------------------------------------------------------- the builder, end to end

def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet")) + [folder / "score_histogram.png"]}


@pytest.mark.slow
def test_stdlib_sample_end_to_end_deterministic_and_resumable(tmp_path, tiny_model_dir):
    from datasets import load_dataset

    src = stdlib_sample(tmp_path / "stdlib")
    (src / "bisect_copy.py").write_text((src / "bisect.py").read_text())  # an exact duplicate to catch
    # Embeddings from one of our own (tiny, random) checkpoints keep this fast on a shared CPU; the default
    # embedder is checked against sentence-transformers above and runs on the whole stdlib in the benchmark.
    options = dict(annotate=40, keep_fraction=0.5, seed=3, embedder=str(tiny_model_dir), embed_max_length=128,
                   n_estimators=50)
    first = build_filtered_code(src, tmp_path / "a", **options)
    info = read_build_info(first)
    stages = info["stages"]
    assert stages["exact_dedup"]["removed:exact_duplicate"] == 1
    assert stages["generated_or_data"].get("removed:generated", 0) >= 1  # token.py / keyword.py say so
    before = info["before_quality_filter"]
    assert info["rows"] == round(0.5 * before) and info["rows"] + info["removed_rows"] == sum(
        v for k, v in stages["source"].items())
    metrics = info["classifier"]["metrics"]
    assert {"accuracy", "f1", "roc_auc"} <= set(metrics) and 0 <= metrics["accuracy"] <= 1
    assert info["tokens"]["kept"] > 0 and info["tokens"]["before_quality_filter"] > info["tokens"]["kept"]
    card = (first / "README.md").read_text()
    for section in ("## Counts per stage", "## Quality classifier", "## Tokens", "score_histogram.png"):
        assert section in card
    assert (first / "score_histogram.png").read_bytes()[:4] == b"\x89PNG"
    dim = QualityClassifier.load(first / "classifier").model.n_features_in_
    assert QualityClassifier.load(first / "classifier").score(np.zeros((1, dim))).shape == (1,)
    ds = load_dataset(str(first), split="train")
    assert len(ds) == info["rows"] and min(ds["quality_score"]) >= info["classifier"]["threshold"]
    removed = load_dataset("parquet", data_files=str(first / "removed" / "*.parquet"), split="train")
    assert set(removed["removed_reason"]) >= {"exact_duplicate", "low_quality"}

    # Same seed, fresh folders and caches: byte-identical shards, classifier scores and histogram.
    second = build_filtered_code(src, tmp_path / "b", **options)
    assert digests(first) == digests(second)

    # Two shards, one of them "killed" before the merge: the rerun does only what is missing.
    shard0 = build_filtered_code(src, tmp_path / "c", num_shards=2, shard_index=0, **options)
    marker = (shard0 / "stats.json").stat().st_mtime_ns
    sharded = build_filtered_code(src, tmp_path / "c", num_shards=2, **options)
    assert (shard0 / "stats.json").stat().st_mtime_ns == marker  # shard 0 was not redone
    stages = read_build_info(sharded)["stages"]
    assert stages["exact_dedup"].get("removed:exact_duplicate", 0) + \
        stages["cross_shard_exact_dedup"].get("removed:exact_duplicate", 0) == 1


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

    # The CLI plumbing: --judge-url / --judge-model annotate the sample of a shard.
    src = tmp_path / "src"
    src.mkdir()
    for i, s in enumerate(snippets[:4]):
        (src / f"m{i}.py").write_text(s)
    from recipes import cli

    cli.main(["data", "filtered-code", "--input", str(src), "--output", str(tmp_path / "out"), "--judge-url",
              served_model.base_url, "--judge-model", served_model.model, "--annotate", "3", "--min-chars", "50",
              "--shard-index", "0", "--embedder", served_model.model, "--embed-max-length", "64"])
    import pyarrow.parquet as pq

    shard = pq.read_table(tmp_path / "out.work" / "shards" / "shard-00000-of-00001" / "kept.parquet").to_pylist()
    annotated = [r for r in shard if r["edu_annotation"] is not None]
    assert len(shard) == 4 and len(annotated) == 3
    assert {r["edu_annotation"] for r in annotated} <= set(expected)  # the judge's raw replies, kept as provenance
