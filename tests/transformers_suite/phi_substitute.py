"""pytest plugin: run transformers' own Phi test module against this package's classes instead of the native ones.

Loaded by `run_suite.py` with `-p phi_substitute` when PHI_SUITE_TARGET=ours. After collection has imported
`tests/models/phi/test_modeling_phi.py` (transformers' file, unchanged), it swaps the classes that module tests:

- the tester's `config_class`, `base_model_class`, `causal_lm_class` -> `modeling_phi.PhiConfig / PhiModel /
  PhiForCausalLM`, and the test class's `all_model_classes`, `pipeline_model_mapping` and `rotary_embedding_layer`;
- the task heads this package does not provide (sequence / token classification, question answering) are set to
  None, so transformers' own `if ... is None: self.skipTest(...)` branches skip those tests. CausalLMModelTester
  would otherwise infer them by name from the top-level `transformers` module, i.e. test the *native* heads on our
  config, so its inference step is wrapped to clear them again afterwards.

Nothing else is touched: every assertion, tolerance and input of the suite stays transformers' own.
With PHI_SUITE_TARGET=native (or unset) the plugin does nothing.
"""

from __future__ import annotations

import os
import sys

import pytest

PHI_TEST_MODULE = "tests.models.phi.test_modeling_phi"
HEAD_ATTRIBUTES = ("question_answering_class", "sequence_classification_class", "token_classification_class")


def substitute_our_classes(module) -> dict[str, str]:
    """Point transformers' Phi test module at `modeling_phi`'s classes; returns what was swapped (for the report)."""
    import modeling_phi
    from modeling_phi import modeling_phi as our_modeling

    tester, test = module.PhiModelTester, module.PhiModelTest
    tester.config_class = modeling_phi.PhiConfig
    tester.base_model_class = modeling_phi.PhiModel
    tester.causal_lm_class = modeling_phi.PhiForCausalLM
    for name in HEAD_ATTRIBUTES:
        setattr(tester, name, None)

    infer = tester._verify_and_infer_model_attributes.__func__

    def verify_and_infer_without_native_heads(cls):
        infer(cls)
        for name in HEAD_ATTRIBUTES:
            setattr(cls, name, None)

    tester._verify_and_infer_model_attributes = classmethod(verify_and_infer_without_native_heads)

    test.all_model_classes = (modeling_phi.PhiModel, modeling_phi.PhiForCausalLM)
    test.pipeline_model_mapping = {"feature-extraction": modeling_phi.PhiModel,
                                   "text-generation": modeling_phi.PhiForCausalLM}
    test.rotary_embedding_layer = our_modeling.PhiRotaryEmbedding
    # module globals used by the (slow, Hub-downloading) integration tests
    module.PhiConfig = modeling_phi.PhiConfig
    module.PhiModel = modeling_phi.PhiModel
    module.PhiForCausalLM = modeling_phi.PhiForCausalLM
    module.PhiRotaryEmbedding = our_modeling.PhiRotaryEmbedding
    return {"PhiConfig": f"{modeling_phi.PhiConfig.__module__}.PhiConfig",
            "PhiModel": f"{modeling_phi.PhiModel.__module__}.PhiModel",
            "PhiForCausalLM": f"{modeling_phi.PhiForCausalLM.__module__}.PhiForCausalLM",
            "modeling_phi_file": our_modeling.__file__}


def pytest_collection_modifyitems(session, config, items):
    target = os.environ.get("PHI_SUITE_TARGET", "native")
    if target == "native":
        return
    if target != "ours":
        raise pytest.UsageError(f"PHI_SUITE_TARGET={target!r}: expected 'native' or 'ours'")
    module = sys.modules.get(PHI_TEST_MODULE)
    if module is None:
        raise pytest.UsageError(f"PHI_SUITE_TARGET=ours but {PHI_TEST_MODULE} was not collected; "
                                "run pytest on tests/models/phi/test_modeling_phi.py")
    swapped = substitute_our_classes(module)
    config.stash[_SWAPPED] = swapped


_SWAPPED = pytest.StashKey[dict]()


def pytest_report_header(config):
    return f"phi_substitute: PHI_SUITE_TARGET={os.environ.get('PHI_SUITE_TARGET', 'native')}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    swapped = config.stash.get(_SWAPPED, None)
    if swapped:
        terminalreporter.write_line(f"phi_substitute: tested {swapped}")
