"""`code_eval` backed by the phi-textbooks sandbox: the Hub metric's inputs and outputs, contained execution.

Drop-in for `evaluate.load("code_eval")` (which needs the Hub, and runs programs with human-eval's guard
only). Each candidate runs as `candidate + "\\n" + test_case` in `evaluation.sandbox` (own process, rlimits,
no network, private tmpfs, private uid where possible). HF_ALLOW_CODE_EVAL is not required: the point
of this module is that the code is contained.

    import evaluate
    code_eval = evaluate.load("path/to/evaluation/code_eval_metric")
    pass_at_k, results = code_eval.compute(references=["assert add(2, 3) == 5"],
                                           predictions=[["def add(a, b): return a * b", "def add(a, b): return a + b"]],
                                           k=[1, 2])
    # pass_at_k == {"pass@1": 0.5, "pass@2": 1.0}
"""

from collections import defaultdict

import datasets
import evaluate

try:
    from evaluation.metrics import pass_at_ks
    from evaluation.sandbox import run_programs
except ImportError as err:  # evaluate copies this file into its cache: the package must be installed
    raise ImportError("code_eval_metric needs the phi-textbooks package: pip install -e <repo>") from err

_DESCRIPTION = "pass@k of code candidates against test programs, executed in a sandbox (same API as code_eval)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of candidate lists, one list of code strings per problem.
    references: list of test programs, one per problem (run after each candidate).
    k: the k of pass@k (default [1, 10, 100]; a k larger than some problem's candidate count is left out).
    num_workers: programs executed in parallel (default 4).
    timeout: seconds per program (default 3.0).
Returns:
    pass_at_k: {"pass@k": float}, and results: {problem index: [(completion_id, {"task_id", "passed",
    "result", "completion_id"}), ...]} in completion order, as the Hub's code_eval returns them.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CodeEvalMetric(evaluate.Metric):
    """The Hub's code_eval interface, executed by evaluation.sandbox."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Chen et al. 2021, Evaluating Large Language Models Trained on Code, arXiv:2107.03374",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Value("string")}),
            homepage="https://github.com/openai/human-eval",
        )

    def _compute(self, predictions, references, k=(1, 10, 100), num_workers=4, timeout=3.0):
        jobs = [(task_id, completion_id, candidate + "\n" + test_case)
                for task_id, (candidates, test_case) in enumerate(zip(predictions, references))
                for completion_id, candidate in enumerate(candidates)]
        outcomes = run_programs([program for _, _, program in jobs], timeout=timeout, workers=num_workers)
        results = defaultdict(list)
        for (task_id, completion_id, _), outcome in zip(jobs, outcomes):
            results[task_id].append((completion_id, {"task_id": task_id, "passed": outcome.passed,
                                                     "result": outcome.result, "completion_id": completion_id}))
        total = [len(r) for r in results.values()]
        correct = [sum(entry["passed"] for _, entry in r) for r in results.values()]
        ks = [k] if isinstance(k, int) else list(k)
        return pass_at_ks(total, correct, ks), results
