"""The EvalPlus protocol (Liu et al. 2023, arXiv:2305.01210) for HumanEval+ and MBPP+, in our sandbox.

For each sample one program runs in `evaluation.sandbox`. It first runs the canonical solution on every
`base_input` and `plus_input`, timing each call: that gives the
expected outputs and each test's time limit, max(floor, factor x canonical time) (evalplus 0.3.1's
defaults: 1 s, 4x; the task YAML sets them).
Only then is the sample's code executed, in its own namespace, and called on deep copies of the same inputs
under those limits; outputs are compared as EvalPlus does (`==`, else floats with `atol`, rtol 1e-7, the
special oracles of HumanEval/32 `find_zero` and MBPP's `are_equivalent`, `sum_div`, `surface_Area`,
`digit_distance_nums`, the set-valued tasks and the three "output is not None" tasks), as evalplus 0.3.1. Base inputs run first: the program ends "passed" (base and plus),
"failed: plus: ..." (base passed, plus did not) or any other failure (base failed). EvalPlus itself downloads
the release files at run time; we read them offline (`humanevalplus/`, `mbppplus/` under PHI_DATA_DIR).

Computing the expected outputs inside each sample's program costs one canonical run per sample; it keeps
the sandbox's interface (a result string, nothing else leaves it), and the sample's code cannot reach them.
Contracts (`contract`: the input-validity asserts) are EvalPlus's filter on generated inputs, and the release's
inputs satisfy them; they are not asserted at evaluation (as in EvalPlus): the JSON release turns tuples
into lists, which several MBPP+ contracts reject. MBPP+ inputs get their Python types back task by task
(tuples, sets, complex numbers) exactly where EvalPlus's `mbpp_deserialize_inputs` restores them.
Memory: 4 GiB per program, as EvalPlus. Each sample has a budget (`max_program_s`, 120 s) for the whole
check, of which the canonical runs may take half: base inputs are judged first, so running out of it during
the plus inputs fails plus only.
Known difference: evalplus 0.3.1 marks every HumanEval/32 (`find_zero`) sample failed, its canonical
solution included (its special oracle `continue`s past the line that records a passed input); here the
oracle's check counts, so canonical and correct samples pass.
"""

from __future__ import annotations

import json
from typing import Any

from evaluation.sandbox import ExecResult, run_programs

# Tasks whose expected output is only "not None" (EvalPlus's MBPP_OUTPUT_NOT_NONE_TASKS).
OUTPUT_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")
# Tasks whose outputs are compared as sets (EvalPlus's MBPP_OUTPUT_SET_EQ_TASKS).
OUTPUT_SET_EQ = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly", "larg_nnum",
                 "intersection_array", "find_dissimilar", "Diff")

_PROGRAM = r'''
import copy as _copy, json as _json, signal as _signal, time as _time

_DATASET, _TASK, _ENTRY, _ATOL = {dataset!r}, {task_id!r}, {entry!r}, {atol!r}
_FLOOR, _FACTOR, _NOT_NONE, _SET_EQ = {floor!r}, {factor!r}, {not_none!r}, {set_eq!r}
_BUDGET = {budget!r}


class _TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def _restore(task, inputs):
    """MBPP+: the Python types JSON lost, per task, as EvalPlus restores them."""
    n = int(task.split("/")[-1])
    groups = {{"args_tuples": (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616,
                              630, 726, 740, 744, 809),
              "nested_tuples": (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
              "first_list_tuples": (75, 413, 444, 753), "second_tuple": (106, 750),
              "first_tuple": (250, 405, 446, 617, 720, 763, 808), "nested_then_tuple": (259, 401, 445),
              "all_tuples": (580, 615, 791)}}
    kind = next((k for k, ids in groups.items() if n in ids), None)
    if kind == "args_tuples":
        return [[tuple(a) for a in inp] for inp in inputs]
    if kind in ("nested_tuples", "nested_then_tuple"):
        out = [[[tuple(x) for x in a] for a in inp] for inp in inputs]
        return [[tuple(a) for a in inp] for inp in out] if kind == "nested_then_tuple" else out
    if kind == "first_list_tuples":
        return [[[tuple(x) for x in inp[0]], inp[1]] for inp in inputs]
    if kind == "second_tuple":
        return [[inp[0], tuple(inp[1])] for inp in inputs]
    if kind == "first_tuple":
        return [[tuple(inp[0]), inp[1]] for inp in inputs]
    if kind == "all_tuples":
        return [_tuples(inp) for inp in inputs]
    if n == 115:
        return [[[set(i) if isinstance(i, list) and i else {{}} for i in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n == 278:
        out = [[[tuple(i) if isinstance(i, list) else i for i in inp[0]]] for inp in inputs]
        return [[tuple(a) for a in inp] for inp in out]
    if n == 307:
        return [[tuple(inp[0]), inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{{k: tuple(v) for k, v in inp[0].items()}}] + inp[1:] for inp in inputs]
    return inputs


def _flat(x):
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flat(item)]
    return [x]


def _allclose(out, exp, atol):
    a, b = _flat(out), _flat(exp)
    try:
        return len(a) == len(b) and all(abs(x - y) <= atol + 1e-7 * abs(y) for x, y in zip(a, b))
    except TypeError:
        return False


def _poly(xs, x):
    import math
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _pyramid_area(base_edge, height):   # Mbpp/581: the slant height from the perpendicular height
    import math
    slant = math.sqrt((base_edge / 2) ** 2 + height ** 2)
    return round(base_edge ** 2 + 2 * base_edge * slant)


def _digit_distance(a, b):   # Mbpp/558: numbers padded with zeros to the same length
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(width), y.zfill(width)))


def _matches(out, exp, inp, reference):
    if _DATASET == "humaneval" and _ENTRY == "find_zero":
        return abs(_poly(*inp, out)) <= _ATOL
    exact = out == exp
    if _DATASET == "mbpp":
        if _ENTRY == "are_equivalent":
            exact = True
        elif _ENTRY == "sum_div":
            exact = exact or out == 0
        elif _ENTRY == "surface_Area":
            exact = exact or abs(out - _pyramid_area(*inp)) <= _ATOL
        elif _ENTRY == "digit_distance_nums":
            exact = exact or out == _digit_distance(*inp)
        elif _ENTRY in _SET_EQ:
            exact = set(out) == set(exp)
        elif _ENTRY in _NOT_NONE:
            exact = (out == exp) if isinstance(out, bool) else (exp == (out is not None))
    atol = 1e-6 if _ATOL == 0 and _is_floats(exp) else _ATOL
    if not exact and atol != 0:
        if type(out) is not type(exp) or (isinstance(exp, (list, tuple)) and len(out) != len(exp)):
            return False
        return _allclose(out, exp, atol)
    return bool(exact)


# The sample's whole budget (the sandbox kills a little later); the canonical runs get half of it at most.
_start = _time.monotonic()
_deadline = _start + _BUDGET / 2
_signal.signal(_signal.SIGALRM, _on_alarm)


def _limited(seconds, fn, *args):
    """fn(*args) under min(seconds, what is left of the current phase); raises _TestTimeout."""
    left = _deadline - _time.monotonic()
    if left <= 0:
        raise _TestTimeout()
    _signal.setitimer(_signal.ITIMER_REAL, min(seconds, left))
    try:
        return fn(*args)
    finally:
        _signal.setitimer(_signal.ITIMER_REAL, 0)


_reference_ns = {{}}
exec(compile({reference!r}, "<canonical>", "exec"), _reference_ns)
_reference = _reference_ns[_ENTRY]
# Expected outputs first, before the sample's code exists in this process. Plus inputs whose canonical
# run does not fit the budget leave the plus verdict failed ("out of time") and the base verdict intact.
_cases, _plus_complete = {{"base": [], "plus": []}}, True
for _kind, _inputs in (("base", _json.loads({base!r})), ("plus", _json.loads({plus!r}))):
    for _i, _inp in enumerate(_restore(_TASK, _inputs) if _DATASET == "mbpp" else _inputs):
        _t0 = _time.perf_counter()
        try:
            _exp = _limited(_BUDGET, _reference, *_copy.deepcopy(_inp))
        except _TestTimeout:
            if _kind == "base":
                raise AssertionError("base: the canonical solution ran out of time") from None
            _plus_complete = False
            break
        _limit = max(_FLOOR, _FACTOR * (_time.perf_counter() - _t0))
        if _ENTRY in _NOT_NONE:
            _exp = _exp is not None
        _cases[_kind].append((_i, _inp, _exp, _limit))

_deadline = _start + _BUDGET
_ns = {{}}
try:
    _limited(_BUDGET, exec, compile({candidate!r}, "<sample>", "exec"), _ns)
except _TestTimeout:
    raise AssertionError("base: the sample's code did not finish loading") from None
_fn = _ns.get(_ENTRY)
if _fn is None:
    raise NameError("base: the sample defines no function " + _ENTRY)
for _kind in ("base", "plus"):
    if _kind == "plus" and not _plus_complete:
        raise AssertionError("plus: out of time computing the expected outputs")
    for _i, _inp, _exp, _limit in _cases[_kind]:
        try:
            _out = _limited(_limit, _fn, *_copy.deepcopy(_inp))
        except _TestTimeout:
            raise AssertionError(f"{{_kind}}: input {{_i}} timed out ({{_limit:.2f}} s)") from None
        except BaseException as _err:
            raise AssertionError(f"{{_kind}}: input {{_i}} raised {{type(_err).__name__}}") from None
        if not _matches(_out, _exp, _inp, _reference):
            raise AssertionError(f"{{_kind}}: input {{_i}}: wrong output")
'''


def _inputs(value: Any) -> str:
    """The release stores inputs as JSON text; the Hub copies as lists. JSON text either way."""
    return value if isinstance(value, str) else json.dumps(value)


def _atol(value: Any) -> float:
    return float(value or 0)


def _canonical(problem: dict[str, Any], dataset: str) -> str:
    """The canonical solution as a whole program (HumanEval's completes its prompt)."""
    if dataset == "humaneval":
        return problem["prompt"] + problem["canonical_solution"]
    return problem["canonical_solution"]


def evalplus_program(problem: dict[str, Any], candidate: str, settings: dict[str, Any]) -> str:
    """The sandbox program that checks `candidate` (the sample's whole code) on base + plus inputs."""
    dataset = settings["dataset"]
    return _PROGRAM.format(budget=float(settings["max_program_s"]), dataset=dataset, task_id=problem["task_id"],
                           entry=problem["entry_point"], atol=_atol(problem.get("atol")),
                           floor=float(settings["time_floor_s"]), factor=float(settings["time_factor"]),
                           not_none=OUTPUT_NOT_NONE, set_eq=OUTPUT_SET_EQ, reference=_canonical(problem, dataset),
                           base=_inputs(problem["base_input"]), plus=_inputs(problem["plus_input"]),
                           candidate=candidate)


def evalplus_outcomes(spec: dict[str, Any], problems_by_id: dict[str, dict[str, Any]], samples: list[dict],
                      workers: int | None = None, progress: bool = False) -> tuple[list[ExecResult], list[bool]]:
    """Per sample: its outcome ("passed" = base and plus) and whether it passed the base inputs."""
    settings = spec["evalplus"]
    programs = []
    for s in samples:
        problem = problems_by_id[s["task_id"]]
        candidate = spec["program"].format(**{**problem, "completion": s["completion"]})
        programs.append(evalplus_program(problem, candidate, settings))
    # The program keeps its own budget (max_program_s), so a sample that runs out of it in the plus tests
    # keeps its base verdict; the sandbox's wall-clock kill is the backstop a little later.
    results = run_programs(programs, timeout=float(settings["max_program_s"]) + 5.0, workers=workers,
                           progress=progress,
                           limits={"memory_mb": int(settings.get("memory_mb", 4096))})
    base = [r.passed or r.result.startswith("failed: plus: ") for r in results]
    return results, base


# EvalPlus itself, for cross-checks. It executes the samples UNSANDBOXED (its reliability_guard only):
# trusted samples only. The script runs in a subprocess with the release file as its data
# (HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH) and computes the expected outputs of the sampled problems
# as its get_groundtruth does (without its dataset-wide cache).
_EVALPLUS_SCRIPT = r"""
import json, os, sys
dataset, data_file, samples_file, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
os.environ["HUMANEVAL_OVERRIDE_PATH" if dataset == "humaneval" else "MBPP_OVERRIDE_PATH"] = data_file
from evalplus.data import get_human_eval_plus, get_mbpp_plus
from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
from evalplus.eval import untrusted_check
from evalplus.gen.util import trusted_exec
problems = get_human_eval_plus() if dataset == "humaneval" else get_mbpp_plus()
samples = [json.loads(line) for line in open(samples_file)]
expected = {}
for task_id in dict.fromkeys(s["task_id"] for s in samples):
    p = problems[task_id]
    not_none = dataset == "mbpp" and p["entry_point"] in MBPP_OUTPUT_NOT_NONE_TASKS
    oracle = {}
    for kind in ("base", "plus"):
        oracle[kind], oracle[kind + "_time"] = trusted_exec(p["prompt"] + p["canonical_solution"], p[kind + "_input"],
                                                            p["entry_point"], record_time=True, output_not_none=not_none)
    expected[task_id] = oracle
def check(s):   # what evalplus.evaluate.check_correctness does, with its default time limits
    p, oracle = problems[s["task_id"]], expected[s["task_id"]]
    verdict = {kind: untrusted_check(dataset, p["prompt"] + s["completion"], p[kind + "_input"], p["entry_point"],
                                     expected=oracle[kind], atol=p["atol"], ref_time=oracle[kind + "_time"])[0]
               for kind in ("base", "plus")}
    return {"task_id": s["task_id"], **verdict}
import time
from concurrent.futures import ThreadPoolExecutor   # each check runs in its own process (evalplus's)
t0 = time.perf_counter()
with ThreadPoolExecutor(workers) as pool:
    for verdict in pool.map(check, samples):
        print(json.dumps(verdict))
print("timing " + json.dumps({"checks_s": time.perf_counter() - t0}))
"""


def evalplus_reference(dataset: str, data_file: str, samples_file: str, workers: int = 1) -> list[dict[str, str]]:
    """evalplus's own verdicts ({"task_id", "base": "pass"/"fail"/"timeout", "plus": ...}) per sample, in order."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _EVALPLUS_SCRIPT, dataset, data_file, samples_file, str(workers)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"evalplus failed on {samples_file}: {proc.stderr.strip()[-800:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
