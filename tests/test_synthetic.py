"""Synthetic textbooks and exercises: prompt sampling, exercise parsing and verification, the mined offline
default, and teacher backends against a real `transformers serve` (killed and restarted mid-run).

The served model is scripted (tests/serving.py): its greedy reply is fixed by the prompt's last word, so
the test knows exactly which replies are code, which fail their tests, and which records must come out.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from datasets_builders.diversity import diversity_report
from datasets_builders.exercises import build_exercises
from datasets_builders.filters.dedup import NearDuplicateIndex
from datasets_builders.hub_dataset import is_complete, read_build_info, read_records
from datasets_builders.mining import doctest_asserts, exercise_from_code, mine_exercises, program
from datasets_builders.prompts import DATA_DIR, PromptSampler
from datasets_builders.sources import LocalPythonFiles, stdlib_root
from datasets_builders.teachers import OpenAITeacher, TransformersTeacher
from datasets_builders.textbook import build_textbook
from evaluation.backends.openai_client import CACHE_FILE, OpenAIClient, ResponseCache
from evaluation.sandbox import run_programs
from tests.serving import TransformersServer, free_port, save_scripted_chat_model

GOOD = '''```python
def count_vowels(text):
    """Return how many vowels (a, e, i, o, u) `text` contains, ignoring case."""
    return sum(ch in "aeiou" for ch in text.lower())


assert count_vowels("Hello") == 2
assert count_vowels("") == 0
assert count_vowels("AEIOU") == 5
```'''
GOOD_UNFENCED = '''import math


def is_square(n):
    """Return True if the non-negative integer n is a perfect square."""
    root = math.isqrt(n)
    return root * root == n


assert is_square(16)
assert not is_square(15)
'''
FAILING = '''```python
def add_one(x):
    """Return x plus one."""
    return x + 2


assert add_one(1) == 2
```'''
PROSE = "I am sorry, I cannot write that exercise."
WRONG_NAME = '```python\ndef other(x):\n    """Double x."""\n    return 2 * x\n\nassert other(2) == 4\n```'
NO_TESTS = '```python\ndef sum_list(xs):\n    """Sum a list."""\n    return sum(xs)\n```'
EXERCISE_REPLIES = {"count_vowels": GOOD, "is_square": GOOD_UNFENCED, "add_one": FAILING, "split_words": PROSE,
                    "make_list": WRONG_NAME, "sum_list": NO_TESTS}
# "merge_dicts" has no scripted reply: the model answers with an empty string.
EXERCISE_EXPECTED = {"count_vowels": "kept", "is_square": "kept", "add_one": "verify:tests_failed",
                     "split_words": "parse:not_code", "make_list": "parse:wrong_function_name",
                     "sum_list": "independent_tests:no_tests", "merge_dicts": "parse:empty_reply"}
SECTION = ("Recursion is when a function calls itself on a smaller input until it reaches a base case.\n\n"
           "```python\ndef factorial(n):\n    return 1 if n < 2 else n * factorial(n - 1)\n```\n")
SECTION2 = ("Sorting puts items in order. Python's sorted() returns a new list; list.sort() sorts in place.\n\n"
            "```python\nprint(sorted([3, 1, 2]))\n```\n")
TEXTBOOK_REPLIES = {"recursion": SECTION, "sorting": SECTION2, "closures": "Closures."}
TEXTBOOK_EXPECTED = {"recursion": "kept", "sorting": "kept", "closures": "reply:too_short",
                     "generators": "reply:empty_reply"}


# ------------------------------------------------------------------------------------------------- prompts
def test_sampler_is_seeded_and_covers_every_list(tmp_path):
    a = PromptSampler(seed=1).sample("exercises", 40)
    assert [p.user for p in a] == [p.user for p in PromptSampler(seed=1).sample("exercises", 40)]
    assert [p.user for p in a] != [p.user for p in PromptSampler(seed=2).sample("exercises", 40)]
    sampler = PromptSampler(seed=1)
    # Stratified: n prompts use min(n, |list|) distinct values of every field, and every name is honoured.
    assert len({p.constraints["difficulty"] for p in a}) == len(sampler.lists["difficulties"])
    assert len({p.constraints["function_name"] for p in a}) == 40
    assert all(p.constraints["function_name"] in p.user and p.constraints["topic"] in p.user for p in a)
    topics = tmp_path / "topics.txt"
    topics.write_text("# mine\nqueues\nheaps\n")
    mine = PromptSampler(seed=0, lists={"topics": topics}).sample("textbook", 6)
    assert {p.constraints["topic"] for p in mine} == {"queues", "heaps"}
    topics.write_text("queues\nheaps\nqueues\n")
    with pytest.raises(ValueError, match=r"topics.txt:3: duplicate"):
        PromptSampler(lists={"topics": topics})


# ------------------------------------------------------------------------------------------------ exercises
@pytest.mark.parametrize("name,expected", list(EXERCISE_EXPECTED.items()))
def test_reply_parsing_names_the_reason(name, expected):
    from datasets_builders.exercises import code_of

    exercise, reason = exercise_from_code(code_of(EXERCISE_REPLIES.get(name, "")), name)
    if expected == "kept" or expected.startswith("verify"):
        assert exercise is not None and exercise.entry_point == name
        assert '"""' in exercise.prompt and exercise.prompt.rstrip().endswith('"""')
        assert "assert" in exercise.tests and "assert" not in exercise.completion
    elif name != "merge_dicts":
        assert exercise is None and reason == expected.split(":")[1]


def test_doctests_become_asserts_that_run():
    doc = """Split a path.

    >>> split("a/b")  # trailing comment
    ('a', 'b')
    >>> x = split("c/d")
    >>> x[1]
    'd'
    >>> split(3)
    Traceback (most recent call last):
    TypeError: not a string
    >>> print("free text")
    free text
    """
    tests = doctest_asserts(doc)
    assert "print(" not in tests  # printed output has no repr to compare: left out
    solution = ("def split(p):\n    if not isinstance(p, str):\n        raise TypeError('not a string')\n"
                "    return tuple(p.split('/'))\n")
    wrong = "def split(p):\n    return tuple(str(p).split('/'))\n"
    ok, bad = run_programs([solution + tests, wrong + tests], timeout=5)
    assert ok.passed, ok.result
    assert not bad.passed and "expected TypeError" in bad.result


def test_dedup_removes_exact_and_near_duplicates(tmp_path):
    """The exercise pipelines' dedup: datatrove's exact + MinHash stages, removed records with their reason."""
    from datatrove.data import Document

    from datasets_builders.filters.dedup import Dedup
    from datasets_builders.pipelines.executors import ExecutorOptions, Stage, run_stages
    from datasets_builders.pipelines.synthetic import dedup_filters, dedup_stages
    from datasets_builders.readers import IntermediateReader
    from datasets_builders.writers import IntermediateWriter, RemovedWriter

    body = "".join(f"    total = total + values[{i}] * weights[{i}]\n" for i in range(12)) + "    return total\n"
    base = {"prompt": 'def weighted(values, weights):\n    """Weighted sum."""\n', "completion": body}
    near = {**base, "completion": body.replace("return total", "return total  # done")}
    other = {"prompt": 'def f():\n    """Other."""\n', "completion": "    return 1\n"}
    # Exact after normalisation (trailing whitespace, blank lines: filters.dedup.normalized_text).
    spaced = {**base, "completion": body.replace("\n", "  \n") + "\n\n"}
    rows = {"base": base, "spaced": spaced, "near": near, "other": other}
    docs = [Document(text=r["prompt"] + r["completion"], id=k, metadata=r) for k, r in rows.items()]
    dedup, work = Dedup(tmp_path / "work"), tmp_path / "work"
    stages = [Stage("write", [docs, IntermediateWriter(work / "in")], 1), *dedup_stages(dedup, work / "in", 1),
              Stage("filter", [IntermediateReader(work / "in"),
                               *dedup_filters(dedup, lambda step, reason: RemovedWriter(tmp_path, step, reason, reason)),
                               IntermediateWriter(work / "out")], 1)]
    run_stages(stages, work, ExecutorOptions())
    kept = [json.loads(line)["id"] for line in (work / "out" / "00000.jsonl").read_text().splitlines()]
    removed = {r["id"]: f"{r['removed_by']}:{r['removed_reason']}" for r in read_records(tmp_path / "removed")}
    # Of the exact pair, the copy whose id hashes highest stays (filters.dedup.id_priority): one of them goes.
    assert sorted(kept + list(removed)) == sorted(rows) and len(kept) == 2 and "other" in kept
    assert sorted(removed.values()) == ["dedup:duplicate", "dedup:near_duplicate"]
    index = NearDuplicateIndex()
    assert not index.seen("a b c d e f") and index.seen("a b c d e f") and not index.seen("x = 1")


def _small_tree(tmp_path: Path) -> Path:
    """A few real stdlib modules with doctests and documented self-contained functions."""
    root = tmp_path / "lib"
    root.mkdir()
    for name in ("textwrap.py", "shlex.py", "fractions.py", "statistics.py", "heapq.py", "base64.py",
                 "colorsys.py", "difflib.py", "ntpath.py", "posixpath.py"):
        (root / name).write_bytes((stdlib_root() / name).read_bytes())
    return root


def test_mined_exercises_are_verified_and_seeded(tmp_path):
    root = _small_tree(tmp_path)
    candidates, rejected = mine_exercises(LocalPythonFiles(root))
    assert candidates and rejected["not_self_contained"] > 0
    a = build_exercises(tmp_path / "a", n=15, seed=3, source_root=root, embed=False)
    b = build_exercises(tmp_path / "b", n=15, seed=3, source_root=root, embed=False)
    c = build_exercises(tmp_path / "c", n=15, seed=4, source_root=root, embed=False)
    shards = sorted((a / "data").glob("*.parquet"))
    assert [s.read_bytes() for s in shards] == [s.read_bytes() for s in sorted((b / "data").glob("*.parquet"))]
    records = read_records(a, columns=["id", "prompt", "completion", "tests", "path", "license", "constraints"])
    assert len(records) == 15 and len({r["id"] for r in records}) == 15
    assert [r["id"] for r in records] != [r["id"] for r in read_records(c)]
    # Independent re-check: every kept exercise runs, with its tests, in the sandbox.
    assert all(r.passed for r in run_programs([program(r) for r in records], timeout=5))
    info = read_build_info(a)
    assert info["generator"] == "mined" and info["diversity"]["records"] == 15
    assert "## Diversity" in (a / "README.md").read_text()
    # Only doctest-verified functions: every one has tests that passed.
    d = build_exercises(tmp_path / "d", n=None, seed=0, source_root=root, require_tests=True, embed=False)
    tested = read_records(d)
    assert tested and all(r["tests"].strip() and r["verified"] == "doctests" for r in tested)
    info = read_build_info(d)
    assert info["rejected"]["no_doctests"] > 0 and info["verified_by_tests_share"] == 1.0
    assert info["with_doctests"] == len(tested) + info["removed_by_reason"].get("verify:tests_failed", 0) + \
        info["removed_by_reason"].get("verify:timed_out", 0) + info["removed_by_reason"].get("dedup:duplicate", 0) + \
        info["removed_by_reason"].get("dedup:near_duplicate", 0)
    assert "are verified by tests: the standard library's doctests" in (d / "README.md").read_text()


def test_mined_textbook_sections(tmp_path):
    root = _small_tree(tmp_path)
    out = build_textbook(tmp_path / "tb", n=8, seed=0, source_root=root, embed=False)
    records = read_records(out, columns=["id", "text", "symbol", "constraints"])
    assert len(records) == 8
    assert all(r["text"].startswith("# The `") and "```python\n" in r["text"] for r in records)
    again = build_textbook(tmp_path / "tb2", n=8, seed=0, source_root=root, embed=False)
    assert [r["text"] for r in read_records(again)] == [r["text"] for r in records]


def test_diversity_report_tells_repetitive_from_diverse():
    same = ["def add(a, b):\n    return a + b\n"] * 10
    varied = [f"def f{i}(x):\n    return x ** {i} + {i * 7} - len(str(x)) * {i}\n" for i in range(10)]
    dull = diversity_report(same, [{"topic": "t"}] * 10, {"topic": 4}, embed=False)
    rich = diversity_report(varied, [{"topic": str(i % 4)} for i in range(10)], {"topic": 4}, embed=False)
    assert dull["near_duplicate_rate"] == 0.9 and rich["near_duplicate_rate"] == 0.0
    assert dull["distinct_2"] < rich["distinct_2"]
    assert dull["coverage"]["topic"] == {"distinct": 1, "of": 4, "fraction": 0.25}
    assert rich["coverage"]["topic"]["fraction"] == 1.0


# ------------------------------------------------------------------------------------------------- client
def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = OpenAIClient(url, "m", max_retries=2, backoff=0.01, cache_dir=tmp_path)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1.*unreachable after 2 retries"):
        client.complete(["hi"])
    assert client.stats["requests"] == 3 and time.monotonic() - start < 10


def test_cache_survives_a_torn_line(tmp_path):
    cache = ResponseCache(tmp_path)
    cache.put("k1", "one")
    with (tmp_path / CACHE_FILE).open("a") as f:
        f.write('{"key": "k2", "rep')  # a run killed mid-write
    cache = ResponseCache(tmp_path)
    assert cache.entries == {"k1": "one"}
    cache.put("k3", "three")
    assert ResponseCache(tmp_path).entries == {"k1": "one", "k3": "three"}


# ------------------------------------------------------------------------------- real server, scripted model
@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """Prompt lists whose last words trigger the scripted replies, and the model saved once."""
    root = tmp_path_factory.mktemp("scripted")
    (root / "names.txt").write_text("\n".join(EXERCISE_EXPECTED) + "\n")
    (root / "topics.txt").write_text("\n".join(TEXTBOOK_EXPECTED) + "\n")
    templates = yaml.safe_load((DATA_DIR / "prompts.yaml").read_text())
    templates["textbook"]["user"] += "\nTopic: {topic}"  # the scripted model reads the last word
    templates["textbook_seeded"]["user"] += "\nStyle: {style}"
    (root / "prompts.yaml").write_text(yaml.safe_dump(templates))
    # Seeded textbook prompts: one documented function as the seed corpus, the styles the scripted words, one
    # audience and one difficulty, so 4 prompts are the 4 styles.
    (root / "styles.txt").write_text("\n".join(TEXTBOOK_EXPECTED) + "\n")
    (root / "one.txt").write_text("students\n")
    (root / "seeds").mkdir()
    (root / "seeds" / "mean.py").write_text('def mean(xs):\n    """Return the arithmetic mean of the numbers xs."""\n'
                                           "    return sum(xs) / len(xs)\n")
    model = save_scripted_chat_model(root / "model", {**EXERCISE_REPLIES, **TEXTBOOK_REPLIES})
    return {"root": root, "model": model,
            "sampler": PromptSampler(seed=0, lists={"function_names": root / "names.txt", "topics": root / "topics.txt",
                                                    "styles": root / "styles.txt", "audiences": root / "one.txt",
                                                    "difficulties": root / "one.txt"},
                                     templates=root / "prompts.yaml"),
            "seeds": root / "seeds"}


@pytest.fixture(scope="module")
def server(scripted):
    with TransformersServer(scripted["model"], log_path=scripted["root"] / "server.log") as srv:
        yield srv


def _outcomes(out: Path, key: str) -> dict[str, str]:
    """constraint value -> 'kept' or 'step:reason', from a built dataset and its removed/ records."""
    found = {json.loads(r["constraints"])[key]: "kept" for r in read_records(out)}
    if (out / "removed").is_dir():
        for r in read_records(out / "removed"):
            constraints = r.get("constraints") or json.loads(r["details"])["constraints"]  # pipelines keep it in details
            found[json.loads(constraints)[key]] = f"{r['removed_by']}:{r['removed_reason']}"
    return found


def _teacher(server, cache_dir, **kw) -> OpenAITeacher:
    return OpenAITeacher(server.base_url, server.model, cache_dir=cache_dir, max_tokens=8, **kw)


@pytest.mark.slow
def test_http_teacher_writes_expected_records(server, scripted, tmp_path):
    sampler, n_ex, n_tb = scripted["sampler"], len(EXERCISE_EXPECTED), len(TEXTBOOK_EXPECTED)
    # The textbook: a datatrove pipeline from prompts seeded by a real extract (seeds -> plan -> prompts -> teach).
    teacher = dict(backend="openai", base_url=server.base_url, model=server.model, cache_dir=tmp_path / "c1",
                   max_tokens=8)
    tb = build_textbook(tmp_path / "textbook", teacher=teacher, n=n_tb, sampler=sampler, embed=False,
                        seed_input=str(scripted["seeds"]))
    assert _outcomes(tb, "style") == TEXTBOOK_EXPECTED
    records = read_records(tb)
    assert {json.loads(r["constraints"])["style"]: r["text"] for r in records} == {
        "recursion": SECTION.strip(), "sorting": SECTION2.strip()}
    assert all(r["seed_symbol"] == "mean.mean" and "Return the arithmetic mean" in r["generation_prompt"]
               for r in records)
    # Lineage: each row names the request whose cached reply it is.
    cached = {json.loads(line)["key"]: json.loads(line)["reply"]
              for line in (tmp_path / "c1" / "responses.jsonl").read_text().splitlines()}
    assert all(cached[r["request_hash"]].strip() == r["text"] for r in records)
    with pytest.raises(ValueError, match=r"--n 5: the seeds allow only 1 extracts x 4 .* = 4 distinct prompts"):
        build_textbook(tmp_path / "too-many", teacher=teacher, n=5, sampler=sampler, seed_input=str(scripted["seeds"]),
                       dry_run=True)
    teacher = _teacher(server, tmp_path / "c2")
    ex = build_exercises(tmp_path / "exercises", teacher=teacher, n=n_ex, sampler=sampler, embed=False)
    assert _outcomes(ex, "function_name") == EXERCISE_EXPECTED
    info = read_build_info(ex)
    assert info["removed_by_reason"] == {"verify:tests_failed": 1, "parse:not_code": 1,
                                         "independent_tests:no_tests": 1, "parse:wrong_function_name": 1,
                                         "parse:empty_reply": 1}
    # One request per prompt, then for each parsed exercise a separate tests request and 2 more candidates.
    assert info["teacher_stats"]["requests"] == n_ex + 4 * 3
    assert info["diversity"]["coverage"]["function_name"]["of"] == n_ex
    assert info["verified"] == {"independent_tests": 2} and info["verified_by_tests_share"] == 1.0
    assert "best of 3 candidates by CodeT dual agreement" in (ex / "README.md").read_text()
    records = read_records(ex, columns=["prompt", "completion", "tests", "generation_prompt", "constraints"])
    assert all(json.loads(r["constraints"])["function_name"] in r["generation_prompt"] for r in records)
    assert sorted(r["tests_passed"] for r in records) == ["2/2", "3/3"]  # every independent test passed
    assert all(r["candidates"] == 3 and r["agreement"] == 3 for r in records)
    # A second run asks nothing: every reply comes from the cache.
    again = _teacher(server, tmp_path / "c2")
    build_exercises(tmp_path / "exercises2", teacher=again, n=n_ex, sampler=sampler, embed=False)
    assert again.stats["cached"] == n_ex + 4 * 3 and again.stats["requests"] == 0
    assert _shards(tmp_path / "exercises2") == _shards(ex)


def _shards(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))]


@pytest.mark.slow
def test_server_killed_mid_run_then_restarted(server, scripted, tmp_path):
    """Kill the server after two replies: a clear error, the replies kept; restart: the same records."""
    sampler, n_ex = scripted["sampler"], len(EXERCISE_EXPECTED)
    reference = build_exercises(tmp_path / "reference", teacher=_teacher(server, tmp_path / "ref-cache"), n=n_ex,
                                sampler=sampler, embed=False)
    cache = tmp_path / "cache"
    lines = lambda: len((cache / CACHE_FILE).read_text().splitlines()) if (cache / CACHE_FILE).exists() else 0  # noqa: E731

    def kill_after_two() -> None:
        while lines() < 2:
            time.sleep(0.01)
        server.kill()

    killer = threading.Thread(target=kill_after_two, daemon=True)
    killer.start()
    # Rate-limited so the server dies with requests still to send.
    teacher = _teacher(server, cache, requests_per_second=2, max_retries=2, backoff=0.05)
    with pytest.raises(ConnectionError, match="unreachable after 2 retries"):
        build_exercises(tmp_path / "out", teacher=teacher, n=n_ex, sampler=sampler, embed=False)
    killer.join(timeout=5)
    done = lines()
    assert 2 <= done < n_ex + 4 * 3 and not is_complete(tmp_path / "out")
    server.start()  # same port, fresh process
    resumed = _teacher(server, cache)
    out = build_exercises(tmp_path / "out", teacher=resumed, n=n_ex, sampler=sampler, embed=False)
    total = n_ex + 4 * 3  # the prompts, then a tests request and 2 more candidates per parsed exercise
    assert resumed.stats["cached"] == done and resumed.stats["requests"] == total - done
    assert _shards(out) == _shards(reference)
    assert _outcomes(out, "function_name") == EXERCISE_EXPECTED
    keys = [json.loads(line)["key"] for line in (cache / CACHE_FILE).read_text().splitlines()]
    assert len(keys) == len(set(keys)) == total  # no request answered twice, none lost


@pytest.mark.slow
def test_local_transformers_teacher_batches(scripted, tmp_path):
    prompts = scripted["sampler"].sample("exercises", len(EXERCISE_EXPECTED))
    teacher = TransformersTeacher(str(scripted["model"]), cache_dir=tmp_path, max_tokens=4, batch_size=4)
    replies = teacher.generate(prompts)
    assert replies == [EXERCISE_REPLIES.get(p.constraints["function_name"], "") for p in prompts]
    again = TransformersTeacher(str(scripted["model"]), cache_dir=tmp_path, max_tokens=4, batch_size=4)
    assert again.generate(prompts) == replies and again.stats["cached"] == len(prompts)


@pytest.mark.slow
def test_seeded_textbook_prompts_beyond_the_lists(tmp_path):
    """More prompts than the lists alone allow (the old sampler stopped at 29,120): seeds make them distinct."""
    from recipes import cli

    cli.main(["data", "textbook", "--n", "40000", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m",
              "--output", str(tmp_path / "tb"), "--dry-run", "--tasks", "2"])
    plan = json.loads((tmp_path / "tb.work" / "plan.json").read_text())
    assert plan["n"] == plan["distinct_prompts"] == 40000 and plan["extracts"] > 1000
    first = json.loads((tmp_path / "tb.work" / "prompts" / "00000.jsonl").open().readline())
    assert "```python" in first["text"] and first["metadata"]["seed_path"].endswith(".py")
