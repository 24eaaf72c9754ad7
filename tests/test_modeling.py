"""PhiForCausalLM against transformers' native PhiForCausalLM on the same weights, plus converters and remote code."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.cache_utils import Cache

from modeling_phi import PhiConfig, PhiForCausalLM
from modeling_phi.convert import export_native_phi, from_native, load_any, native_state_dict
from modeling_phi.modeling_phi import CACHE_KEY

TOL = 1e-5
VOCAB = 512
# microsoft/phi-1_5's config.json as published (transformers 4.37 era).
PHI_1_5_CONFIG = {
    "_name_or_path": "microsoft/phi-1_5", "architectures": ["PhiForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": None, "embd_pdrop": 0.0, "eos_token_id": None, "hidden_act": "gelu_new", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 8192, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
    "model_type": "phi", "num_attention_heads": 32, "num_hidden_layers": 24, "num_key_value_heads": None,
    "partial_rotary_factor": 0.5, "qk_layernorm": False, "resid_pdrop": 0.0, "rope_scaling": None,
    "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.37.0",
    "use_cache": True, "vocab_size": 51200,
}


def native_config(config: PhiConfig) -> transformers.PhiConfig:
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "auto_map", "transformers_version")}
    return transformers.PhiConfig(**fields)


@pytest.fixture(scope="module")
def pair():
    """Our model and the native one holding the same random weights (fp32, eval)."""
    torch.manual_seed(0)
    config = PhiConfig.from_preset("tiny", num_hidden_layers=2, vocab_size=VOCAB, bos_token_id=1, eos_token_id=1)
    ours = PhiForCausalLM(config).eval()
    # Non-trivial biases / norms so a swapped or skipped parameter shows up in the logits.
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ref = transformers.PhiForCausalLM(native_config(config)).eval()
    ref.load_state_dict(native_state_dict(ours), strict=True)
    return ours, ref


def set_attn(models, impl):
    for m in models:
        m.set_attn_implementation(impl)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logits_match_native(pair, impl):
    set_attn(pair, impl)
    ids = torch.randint(0, VOCAB, (3, 41), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (pair[0](ids).logits - pair[1](ids).logits).abs().max().item()
    assert diff <= TOL


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_padded_batch_matches_native_and_unpadded(pair, impl):
    set_attn(pair, impl)
    ours, ref = pair
    ids = torch.randint(2, VOCAB, (2, 20), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :7] = 0  # left padding
    ids[0, :7] = 0
    with torch.no_grad():
        a, b = ours(ids, attention_mask=mask).logits, ref(ids, attention_mask=mask).logits
        alone = ours(ids[:1, 7:]).logits
    assert (a - b)[mask.bool()].abs().max().item() <= TOL
    assert (a[0, 7:] - alone[0]).abs().max().item() <= TOL


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("train_mode", [False, True])
def test_packed_documents_never_attend_across(pair, impl, train_mode):
    ours, _ = pair
    set_attn(pair, impl)
    g = torch.Generator().manual_seed(3)
    docs = [torch.randint(2, VOCAB, (n,), generator=g) for n in (9, 14, 6)]
    packed = torch.cat(docs)[None]
    position_ids = torch.cat([torch.arange(len(d)) for d in docs])[None]
    ours.train(train_mode)  # dropout is 0 in the tiny preset: train mode only changes the cache default
    try:
        with torch.no_grad():
            kwargs = {} if train_mode else {"use_cache": False}
            logits = ours(packed, position_ids=position_ids, **kwargs).logits[0]
            start = 0
            for doc in docs:
                alone = ours(doc[None], use_cache=False).logits[0]
                assert (logits[start:start + len(doc)] - alone).abs().max().item() <= TOL
                start += len(doc)
    finally:
        ours.eval()


def test_training_builds_no_cache(pair):
    ours, _ = pair
    ours.train()
    try:
        out = ours(torch.randint(0, VOCAB, (1, 8)), labels=torch.randint(0, VOCAB, (1, 8)))
    finally:
        ours.eval()
    assert getattr(out, CACHE_KEY) is None


@pytest.fixture(scope="module")
def pair6():
    """A random 6-layer pair, the size the generation check of issue 12 uses."""
    torch.manual_seed(1)
    config = PhiConfig.from_preset("tiny", num_hidden_layers=6, vocab_size=VOCAB, bos_token_id=1, eos_token_id=1)
    ours = PhiForCausalLM(config).eval()
    ref = transformers.PhiForCausalLM(native_config(config)).eval()
    ref.load_state_dict(native_state_dict(ours), strict=True)
    return ours, ref


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_greedy_generation_matches_native(pair6, impl):
    """8 prompts x 64 tokens (two left-padded), 128 greedy tokens: ours = native with a dynamic and a static cache.

    Without the cache reaching attention every step after the first sees one token of context, so the rows
    diverge from the second generated token on."""
    set_attn(pair6, impl)
    ours, ref = pair6
    ids = torch.randint(2, VOCAB, (8, 64), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, :5], mask[6, :17] = 0, 0
    kwargs = dict(attention_mask=mask, max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)
    expected = ref.generate(ids, **kwargs)
    assert expected.shape == (8, 192)
    for cache_implementation in ("dynamic", "static"):
        got = ours.generate(ids, cache_implementation=cache_implementation, **kwargs)
        rows = [i for i in range(8) if not torch.equal(got[i], expected[i])]
        assert not rows, f"{cache_implementation} cache: rows {rows} differ from native"


@pytest.mark.parametrize("keyword", ["cache", "past_key_values"])
def test_continue_from_cache_under_either_keyword(pair, keyword):
    """Prefill, then feed the next tokens with the cache: the logits equal one forward over the whole sequence."""
    ours, _ = pair
    set_attn(pair, "sdpa")
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(8))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old keyword is deprecated on newer transformers
        full = ours(ids).logits
        prefix = ours(ids[:, :13], use_cache=True)
        cache = getattr(prefix, CACHE_KEY)
        assert isinstance(cache, Cache) and cache.get_seq_length() == 13
        rest = ours(ids[:, 13:], use_cache=True, **{keyword: cache})
    assert getattr(rest, CACHE_KEY) is cache and cache.get_seq_length() == 20
    assert (rest.logits - full[:, 13:]).abs().max().item() <= TOL


def test_hidden_states_and_attentions_match_native(pair):
    set_attn(pair, "eager")  # sdpa computes no attention weights, for native Phi as for ours
    ours, ref = pair
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        a = ours(ids, output_hidden_states=True, output_attentions=True)
        b = ref(ids, output_hidden_states=True, output_attentions=True)
    n = ours.config.num_hidden_layers
    assert len(a.hidden_states) == len(b.hidden_states) == n + 1 and len(a.attentions) == len(b.attentions) == n
    for x, y in zip(a.hidden_states + a.attentions, b.hidden_states + b.attentions):
        assert x.shape == y.shape and (x - y).abs().max().item() <= TOL
    with torch.no_grad():
        base = ours.model(ids, output_hidden_states=True)
    assert torch.equal(base.hidden_states[-1], base.last_hidden_state)


def test_return_dict_false_gives_native_tuple(pair):
    ours, ref = pair
    ids = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        a = ours(ids, labels=ids, return_dict=False)
        b = ref(ids, labels=ids, return_dict=False)
    assert type(a) is tuple and len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            assert (x - y).abs().max().item() <= TOL
        else:
            assert type(x) is type(y)


@pytest.mark.parametrize("rope", [{"rope_type": "linear", "factor": 4.0}, {"rope_type": "dynamic", "factor": 2.0}])
def test_rope_scaling_matches_native(rope):
    torch.manual_seed(0)
    params = {"rope_theta": 10000.0, "partial_rotary_factor": 0.5, **rope}
    config = PhiConfig.from_preset("tiny", num_hidden_layers=2, vocab_size=VOCAB, max_position_embeddings=32,
                                   rope_parameters=params)
    ours = PhiForCausalLM(config).eval()
    ref = transformers.PhiForCausalLM(native_config(config)).eval()
    ref.load_state_dict(native_state_dict(ours))
    plain = PhiForCausalLM(PhiConfig.from_preset("tiny", num_hidden_layers=2, vocab_size=VOCAB,
                                                 max_position_embeddings=32)).eval()
    plain.load_state_dict(ours.state_dict())
    ids = torch.randint(0, VOCAB, (1, 48), generator=torch.Generator().manual_seed(11))  # past 32: dynamic acts
    with torch.no_grad():
        got, expected, default = ours(ids).logits, ref(ids).logits, plain(ids).logits
    assert (got - expected).abs().max().item() <= TOL
    assert (got - default).abs().max().item() > 1e-3, "rope scaling had no effect"


@pytest.mark.parametrize("field, value", [("qk_layernorm", True), ("num_key_value_heads", 2),
                                          ("rope_parameters", {"rope_type": "nonsense", "rope_theta": 1e4})])
def test_unimplemented_config_fields_are_refused(field, value):
    try:
        config = PhiConfig.from_preset("tiny", num_hidden_layers=1, vocab_size=VOCAB, **{field: value})
    except (ValueError, KeyError) as err:  # transformers' own config validation may refuse first
        assert field.split("_")[0] in str(err) or "rope" in str(err)
        return
    with pytest.raises(ValueError, match=rf"PhiConfig\.{field}") as err:
        PhiForCausalLM(config)
    assert "\n" not in str(err.value)


def test_packed_position_ids_reach_the_attention_function(pair):
    """flash_attention_2 separates packed documents only through the position_ids it receives (its varlen
    path): check, without a GPU, that a registered attention function gets them unchanged in every layer."""
    from transformers import AttentionInterface

    from modeling_phi.modeling_phi import eager_attention_forward

    seen = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        seen.append(kwargs.get("position_ids"))
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("recording", recording)
    ours, _ = pair
    position_ids = torch.cat([torch.arange(n) for n in (9, 14, 6)])[None]
    ids = torch.randint(2, VOCAB, (1, 29), generator=torch.Generator().manual_seed(12))
    try:
        ours.set_attn_implementation("recording")
        ours.train()
        with torch.no_grad():
            ours(ids, position_ids=position_ids)
    finally:
        ours.eval()
        ours.set_attn_implementation("sdpa")
    assert len(seen) == ours.config.num_hidden_layers
    assert all(p is not None and torch.equal(p, position_ids) for p in seen)


def test_loss_ignores_minus_100(pair):
    ours, _ = pair
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        out = ours(ids, labels=labels)
        manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                                                   ignore_index=-100)
    assert abs(out.loss.item() - manual.item()) <= 1e-5


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    model = PhiForCausalLM(PhiConfig.from_preset("tiny", num_hidden_layers=2, vocab_size=VOCAB))
    model.train()
    ids = torch.randint(0, VOCAB, (2, 16))

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))


def test_dropout_knobs_act_in_training_only():
    torch.manual_seed(0)
    config = PhiConfig.from_preset("tiny", num_hidden_layers=1, vocab_size=VOCAB, resid_pdrop=0.5,
                                   attention_dropout=0.5, embd_pdrop=0.5)
    model = PhiForCausalLM(config)
    ids = torch.randint(0, VOCAB, (1, 8))
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)


def test_presets_and_phi_1_5_config(tmp_path):
    counts = {name: sum(p.numel() for p in PhiForCausalLM(PhiConfig.from_preset(name)).parameters())
              for name in ("tiny", "small")}
    assert 5e6 <= counts["tiny"] <= 10e6 and 30e6 <= counts["small"] <= 50e6
    config = PhiConfig.from_preset("phi-1")
    assert (config.num_hidden_layers, config.hidden_size, config.eos_token_id, config.resid_pdrop) == (24, 2048, 50256, 0.1)
    (tmp_path / "config.json").write_text(json.dumps(PHI_1_5_CONFIG))
    loaded = PhiConfig.from_pretrained(tmp_path)
    assert loaded.rope_parameters["partial_rotary_factor"] == 0.5 and loaded.num_hidden_layers == 24
    with pytest.raises(ValueError, match="known presets"):
        PhiConfig.from_preset("phi-7")


def test_phi1_parameter_count_on_meta_device():
    with torch.device("meta"):
        n = sum(p.numel() for p in PhiForCausalLM(PhiConfig.from_preset("phi-1")).parameters())
        n_small = sum(p.numel() for p in PhiForCausalLM(PhiConfig.from_preset("phi-1-small")).parameters())
    assert round(n / 1e9, 3) == 1.418 and round(n_small / 1e6, 1) == 356.8


# config.json as the old remote code wrote it (microsoft/phi-1's MixFormer release, phi-1_5's phi-msft release),
# shrunk to the test model's shape.
LEGACY_CONFIGS = {
    "mixformer": {
        "_name_or_path": "microsoft/phi-1", "activation_function": "gelu_new",
        "architecture": {"block_cls": "parallel", "mixer": {}, "mlp": {"mlp_cls": "mlp"}},
        "architectures": ["MixFormerSequentialForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_mixformer_sequential.MixFormerSequentialConfig",
                     "AutoModelForCausalLM": "modeling_mixformer_sequential.MixFormerSequentialForCausalLM"},
        "embd_layer": "default", "embd_pdrop": 0.0, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
        "model_type": "mixformer-sequential", "n_embd": 256, "n_head": 4, "n_inner": None, "n_layer": 2,
        "n_positions": 1024, "phyagi_version": "0.0.4.dev", "resid_pdrop": 0.0, "rotary_dim": 32,
        "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.31.0", "vocab_size": VOCAB,
    },
    "phi-msft": {
        "_name_or_path": "microsoft/phi-1_5", "activation_function": "gelu_new", "architectures": ["PhiForCausalLM"],
        "attn_pdrop": 0.0, "auto_map": {"AutoConfig": "configuration_phi.PhiConfig",
                                        "AutoModelForCausalLM": "modeling_phi.PhiForCausalLM"},
        "embd_pdrop": 0.0, "flash_attn": False, "flash_rotary": False, "fused_dense": False, "img_processor": None,
        "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "phi-msft", "n_embd": 256,
        "n_head": 4, "n_head_kv": None, "n_inner": None, "n_layer": 2, "n_positions": 1024, "resid_pdrop": 0.0,
        "rotary_dim": 32, "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.34.1",
        "vocab_size": VOCAB,
    },
}


def write_legacy_checkpoint(folder, native_state, layout):
    """Keys, fused Wqkv, saved rotary buffers and pytorch_model.bin, as the old remote code's save_pretrained did."""
    folder.mkdir()
    legacy = from_native(native_state, layout)
    # q, k, v rows stacked in one Wqkv: [q; k; v], exactly a plain concatenation.
    assert legacy[f"{'layers.1' if layout == 'mixformer' else 'transformer.h.0'}.mixer.Wqkv.weight"].shape[0] == 3 * 256
    prefix = "layers.{}" if layout == "mixformer" else "transformer.h.{}"
    offset = 1 if layout == "mixformer" else 0
    for i in range(2):  # the old code kept inv_freq as a persistent buffer
        legacy[f"{prefix.format(i + offset)}.mixer.rotary_emb.inv_freq"] = torch.rand(16)
    torch.save(legacy, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(LEGACY_CONFIGS[layout]))


@pytest.mark.parametrize("layout", ["mixformer", "phi-msft"])
def test_legacy_checkpoint_converts_logit_for_logit(layout, tmp_path):
    torch.manual_seed(13)
    config = PhiConfig.from_preset("tiny", num_hidden_layers=2, vocab_size=VOCAB, bos_token_id=50256,
                                   eos_token_id=50256)
    ref = transformers.PhiForCausalLM(native_config(config)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    write_legacy_checkpoint(tmp_path / "old", ref.state_dict(), layout)
    ids = torch.randint(0, VOCAB, (2, 17), generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        expected = ref(ids).logits
        imported = load_any(tmp_path / "old").eval()
        assert (imported(ids).logits - expected).abs().max().item() <= TOL
    assert imported.config.num_hidden_layers == 2 and imported.config.intermediate_size == 1024

    # Export back to the legacy layout: the config speaks that layout's names and the keys are the old ones.
    from modeling_phi.convert import main as convert

    convert(argparse.Namespace(input=str(tmp_path / "old"), output=str(tmp_path / "back"), to=layout))
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    original = LEGACY_CONFIGS[layout]
    for key in ("model_type", "architectures", "n_embd", "n_layer", "n_head", "rotary_dim", "n_positions",
                "vocab_size", "activation_function", "layer_norm_epsilon"):
        assert written[key] == original[key], key
    assert written["n_inner"] in (None, 4 * original["n_embd"])
    from safetensors.torch import load_file

    old_keys = {k for k in torch.load(tmp_path / "old" / "pytorch_model.bin") if not k.endswith("inv_freq")}
    assert set(load_file(tmp_path / "back" / "model.safetensors")) == old_keys
    with torch.no_grad():
        assert torch.equal(load_any(tmp_path / "back").eval()(ids).logits, imported(ids).logits)


def test_unknown_layout_names_keys(tmp_path, pair):
    from safetensors.torch import save_file

    ours, _ = pair
    state = native_state_dict(ours)
    state["model.layers.0.self_attn.rogue.weight"] = torch.zeros(2)
    del state["lm_head.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    ours.config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"missing keys: \['lm_head.bias'\].*rogue"):
        load_any(tmp_path)


def test_native_phi_reads_our_folder_and_export(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(tmp_path / "ours")
    ref, info = transformers.PhiForCausalLM.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    export_native_phi(ours, tmp_path / "native")
    assert json.loads((tmp_path / "native" / "config.json").read_text())["model_type"] == "phi"
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "native")
    assert type(exported) is transformers.PhiForCausalLM
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert (exported.eval()(ids).logits - ours(ids).logits).abs().max().item() <= TOL


def test_auto_classes_registered(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is PhiConfig
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is PhiForCausalLM
    ids = torch.randint(0, VOCAB, (1, 12))
    with torch.no_grad():
        assert (loaded(ids).logits - ours(ids).logits).abs().max().item() <= TOL
    assert not list(tmp_path.glob("*.bin")) and (tmp_path / "model.safetensors").is_file()


def test_remote_code_without_package(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        expected = ours(ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys
        class Block:  # make this project unimportable, as in an environment that never installed it
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"modeling_phi", "datasets_builders", "evaluation", "recipes"}}:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import torch
        from transformers import AutoModelForCausalLM
        try:
            import modeling_phi
            sys.exit("package still importable")
        except ImportError:
            pass
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ckpt")!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        exp = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            diff = (model(exp["ids"]).logits - exp["logits"]).abs().max().item()
        assert diff <= {TOL}, diff
        print("OK", type(model).__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK PhiForCausalLM" in result.stdout, result.stderr[-2000:]


@pytest.mark.slow
def test_flex_attention_matches_sdpa(pair):
    """flex_attention compiles its kernel on first use (tens of seconds on CPU), hence slow."""
    ours, _ = pair
    ids = torch.randint(0, VOCAB, (2, 16), generator=torch.Generator().manual_seed(7))
    try:
        with torch.no_grad():
            ours.set_attn_implementation("sdpa")
            expected = ours(ids).logits
            ours.set_attn_implementation("flex_attention")
            got = ours(ids).logits
    finally:
        ours.set_attn_implementation("sdpa")
    assert (got - expected).abs().max().item() <= TOL


def test_fused_qkv_loads_native_folder_and_saves_native_keys(tmp_path):
    """In memory q/k/v are one `qkv_proj`; transformers' weight conversion fuses a native Phi folder at load and
    `save_pretrained` writes native's q_proj / k_proj / v_proj back, tensor for tensor."""
    from safetensors.torch import load_file

    torch.manual_seed(21)
    native = transformers.PhiForCausalLM(native_config(PhiConfig.from_preset("tiny", num_hidden_layers=2,
                                                                            vocab_size=VOCAB))).eval()
    with torch.no_grad():
        for p in native.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    native.save_pretrained(tmp_path / "native")  # model_type "phi", transformers' own keys
    ours, info = PhiForCausalLM.from_pretrained(tmp_path / "native", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    params = dict(ours.named_parameters())
    assert params["model.layers.1.self_attn.qkv_proj.weight"].shape == (3 * 256, 256)
    assert not any(n.split(".")[-2] in ("q_proj", "k_proj", "v_proj") for n in params)
    ids = torch.randint(0, VOCAB, (2, 19), generator=torch.Generator().manual_seed(22))
    with torch.no_grad():
        assert (ours.eval()(ids).logits - native(ids).logits).abs().max().item() <= TOL

    ours.save_pretrained(tmp_path / "ours")
    saved, original = load_file(tmp_path / "ours" / "model.safetensors"), load_file(tmp_path / "native" / "model.safetensors")
    assert set(saved) == set(original)
    assert all(torch.equal(saved[k], original[k]) for k in original)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == PhiConfig.model_type


@pytest.mark.parametrize("num_items", [None, 40])
def test_training_step_loss_and_gradients_match_native(pair, num_items):
    """fp32: loss and every gradient = native's (through the fused q/k/v, the rotary backward and our loss),
    with ignored labels and the `num_items_in_batch` normalisation gradient accumulation uses."""
    from transformers.core_model_loading import revert_weight_conversion

    ours, ref = pair
    ids = torch.randint(0, VOCAB, (3, 23), generator=torch.Generator().manual_seed(23))
    labels = ids.clone()
    labels[0, :6] = -100
    kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    losses, grads = [], []
    for model in pair:
        model.zero_grad(set_to_none=True)
        loss = model(ids, labels=labels, **kwargs).loss
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad for n, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    assert abs(losses[0] - losses[1]) <= TOL
    ours_grads = revert_weight_conversion(ours, grads[0])  # q/k/v gradient rows under native's names
    assert set(ours_grads) == set(grads[1])
    for name, expected in grads[1].items():
        assert (ours_grads[name] - expected).abs().max().item() <= 1e-6, name


def test_tensor_parallel_plan_names_existing_modules(pair):
    """The fused qkv_proj must not be column-split like native's q/k/v: the plan shards the MLP only."""
    ours, _ = pair
    plan = {**ours.config.base_model_tp_plan}
    modules = dict(ours.model.named_modules())
    for pattern in plan:
        assert any(re.fullmatch(pattern.replace(".", r"\.").replace("*", r"\d+"), n) for n in modules), pattern
    assert not any("q_proj" in k or "qkv" in k for k in plan)
