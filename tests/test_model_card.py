"""Model card: real results of both evaluations -> a `model-index` the Hub's own parser reads back."""

from __future__ import annotations

import json

import pytest
import yaml

from evaluation import model_card


@pytest.fixture(scope="module")
def commonsense_results(tiny_model_dir, shared_data, tmp_path_factory):
    from evaluation.multiple_choice import evaluate_multiple_choice

    out = tmp_path_factory.mktemp("commonsense")
    evaluate_multiple_choice(tiny_model_dir, tasks=["arc_easy", "mmlu_anatomy"], out_dir=out, limit=2,
                             data_dir=shared_data)
    return out / "results.json"


@pytest.fixture(scope="module")
def code_results(tmp_path_factory):
    code_eval = pytest.importorskip("evaluation.code_eval")
    problems = code_eval.load_problems("humaneval")[:2]
    # One reference solution and one wrong completion: pass@1 = 0.5.
    samples = [{"task_id": problems[0]["task_id"], "completion": problems[0]["reference"]},
               {"task_id": problems[1]["task_id"], "completion": "    return None\n"}]
    out = tmp_path_factory.mktemp("humaneval")
    code_eval.score_samples("humaneval", samples, out, problems=problems, progress=False)
    return out  # the folder: read_results finds results.json in it


def test_model_index_from_both_evaluations(commonsense_results, code_results):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    index = model_card.model_index("phi-tiny", [commonsense_results, code_results], url="https://example.org/run")
    name, evals = model_index_to_eval_results(index)  # the Hub library's own parser
    assert name == "phi-tiny"
    got = {(e.dataset_name, e.metric_type): e for e in evals}
    commonsense = json.loads(commonsense_results.read_text())["results"]
    arc = got[("ARC-Easy", "acc_norm")]
    assert arc.metric_value == pytest.approx(commonsense["arc_easy"]["acc_norm"], abs=1e-4)
    assert (arc.dataset_type, arc.dataset_config, arc.dataset_split) == ("allenai/ai2_arc", "ARC-Easy", "test")
    assert arc.dataset_args == {"num_few_shot": 0} and arc.task_type == "text-generation"
    mmlu = got[("MMLU", "acc")]
    assert mmlu.dataset_args == {"num_few_shot": 2} and mmlu.dataset_config == "anatomy"
    humaneval = got[("HumanEval", "pass@1")]
    assert humaneval.metric_value == pytest.approx(0.5)
    assert humaneval.dataset_type == "openai/openai_humaneval" and humaneval.source_url == "https://example.org/run"
    from evaluation.sandbox import sandbox_mode
    assert humaneval.dataset_args == {"num_few_shot": 0, "sandbox_mode": sandbox_mode()}   # where programs ran


def test_evalplus_results_give_base_and_plus_metrics(tmp_path):
    from evaluation.code_eval import load_problems, score_samples

    problem = load_problems("humanevalplus", limit=1)[0]
    score_samples("humanevalplus", [{"task_id": problem["task_id"], "completion": problem["canonical_solution"]}],
                  tmp_path, problems=[problem], progress=False)
    entry = model_card.model_index("m", [tmp_path])[0]["results"][0]
    assert entry["dataset"]["type"] == "evalplus/humanevalplus" and entry["dataset"]["name"] == "HumanEval+"
    assert [m["type"] for m in entry["metrics"]] == ["pass@1 (base)", "pass@1 (plus)"]


def test_update_model_card_keeps_the_rest(tmp_path, commonsense_results, code_results):
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\ntags:\n- phi\n---\n# My model\n\nBody text.\n")
    model_card.update_model_card(readme, "phi-tiny", [commonsense_results])
    model_card.update_model_card(readme, "phi-tiny", [commonsense_results, code_results])  # replaces, not appends
    text = readme.read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "mit" and meta["tags"] == ["phi"]
    assert len(meta["model-index"][0]["results"]) == 3  # arc_easy, mmlu_anatomy, humaneval
    assert text.endswith("# My model\n\nBody text.\n")


def test_unreadable_results_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        model_card.model_index("m", [tmp_path])
    bad = tmp_path / "results.json"
    bad.write_text('{"results": \n')
    with pytest.raises(ValueError, match=r"results\.json:\d+: not valid JSON"):
        model_card.model_index("m", [bad])
    bad.write_text('{"something": 1}')
    with pytest.raises(ValueError, match="neither a commonsense"):
        model_card.model_index("m", [bad])
