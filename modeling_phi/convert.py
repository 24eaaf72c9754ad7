"""Convert phi checkpoints between layouts: ours / transformers' native `phi`, and Microsoft's older ones.

Layouts (state-dict key schemes), all with the same tensors:
- native:    transformers' PhiForCausalLM (`model.layers.N.self_attn.q_proj`, ...); what we read and write.
- mixformer: MixFormerSequentialForCausalLM, the first phi-1 release (`layers.0.wte`, `layers.{i+1}.mixer.Wqkv`,
             `layers.{L+1}.ln` / `.linear` for the final LayerNorm / lm_head).
- phi-msft:  the second remote-code release (`transformer.embd.wte`, `transformer.h.N.mixer.Wqkv`, `lm_head.ln`).
The fused `Wqkv` is a plain concatenation of q, k, v rows.

Example:
    phi convert --input old-phi-1/ --output phi-1-native/             # import (layout detected)
    phi convert --input runs/tiny/final --output tiny-hf --to phi      # export as model_type "phi" for vLLM / TGI
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import torch

from .configuration_phi import PhiConfig

# Per-layer tensors: native suffix -> legacy suffix (under the layer prefix). q/k/v are fused on the legacy side.
LAYER_KEYS = {
    "input_layernorm": "ln",
    "self_attn.dense": "mixer.out_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def _legacy_names(layout: str, num_layers: int) -> dict[str, str]:
    """Prefixes of the legacy layout for embedding, layer i, final LayerNorm and lm_head."""
    if layout == "mixformer":
        return {"embed": "layers.0.wte", "layer": "layers.{}", "layer_offset": 1,
                "final_ln": f"layers.{num_layers + 1}.ln", "head": f"layers.{num_layers + 1}.linear"}
    if layout == "phi-msft":
        return {"embed": "transformer.embd.wte", "layer": "transformer.h.{}", "layer_offset": 0,
                "final_ln": "lm_head.ln", "head": "lm_head.linear"}
    raise ValueError(f"unknown checkpoint layout {layout!r}; known: native, mixformer, phi-msft")


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    if "model.embed_tokens.weight" in state_dict:
        return "native"
    if "layers.0.wte.weight" in state_dict:
        return "mixformer"
    if "transformer.embd.wte.weight" in state_dict:
        return "phi-msft"
    raise ValueError("unknown checkpoint layout: none of model.embed_tokens.weight (native), layers.0.wte.weight "
                     f"(mixformer), transformer.embd.wte.weight (phi-msft); first keys: {sorted(state_dict)[:8]}")


def count_layers(state_dict: dict[str, torch.Tensor], layout: str) -> int:
    pattern = {"native": r"model\.layers\.(\d+)\.", "mixformer": r"layers\.(\d+)\.mixer\.", "phi-msft": r"transformer\.h\.(\d+)\."}
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern[layout], k))}
    return len(found)


def to_native(state_dict: dict[str, torch.Tensor], layout: str | None = None) -> dict[str, torch.Tensor]:
    """Rename (and split Wqkv) a legacy state dict into the native layout; native passes through."""
    layout = layout or detect_layout(state_dict)
    if layout == "native":
        return dict(state_dict)
    num_layers = count_layers(state_dict, layout)
    names = _legacy_names(layout, num_layers)
    src = dict(state_dict)
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": src.pop(f"{names['embed']}.weight")}
    for i in range(num_layers):
        legacy = names["layer"].format(i + names["layer_offset"])
        for native_suffix, legacy_suffix in LAYER_KEYS.items():
            for p in ("weight", "bias"):
                out[f"model.layers.{i}.{native_suffix}.{p}"] = src.pop(f"{legacy}.{legacy_suffix}.{p}")
        for p in ("weight", "bias"):
            for name, part in zip(QKV, src.pop(f"{legacy}.mixer.Wqkv.{p}").chunk(3, dim=0)):
                out[f"model.layers.{i}.{name}.{p}"] = part.contiguous()
    for p in ("weight", "bias"):
        out[f"model.final_layernorm.{p}"] = src.pop(f"{names['final_ln']}.{p}")
        out[f"lm_head.{p}"] = src.pop(f"{names['head']}.{p}")
    # Buffers the old code saved (rotary inv_freq, causal masks) carry no weights.
    leftover = [k for k in src if not k.endswith(("inv_freq", ".masked_bias", ".bias_mask"))]
    if leftover:
        raise ValueError(f"unexpected keys in the {layout} checkpoint: {leftover[:10]}")
    return out


def from_native(state_dict: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """The inverse of `to_native`: write a native state dict in a legacy layout."""
    if layout == "native":
        return dict(state_dict)
    num_layers = count_layers(state_dict, "native")
    names = _legacy_names(layout, num_layers)
    sd = state_dict
    out = {f"{names['embed']}.weight": sd["model.embed_tokens.weight"]}
    for i in range(num_layers):
        legacy = names["layer"].format(i + names["layer_offset"])
        for native_suffix, legacy_suffix in LAYER_KEYS.items():
            for p in ("weight", "bias"):
                out[f"{legacy}.{legacy_suffix}.{p}"] = sd[f"model.layers.{i}.{native_suffix}.{p}"]
        for p in ("weight", "bias"):
            out[f"{legacy}.mixer.Wqkv.{p}"] = torch.cat([sd[f"model.layers.{i}.{n}.{p}"] for n in QKV], dim=0)
    for p in ("weight", "bias"):
        out[f"{names['final_ln']}.{p}"] = sd[f"model.final_layernorm.{p}"]
        out[f"{names['head']}.{p}"] = sd[f"lm_head.{p}"]
    return out


def config_from_legacy(cfg: dict) -> PhiConfig:
    """PhiConfig from a config.json of any phi release (native phi, phi-msft / mixformer GPT-2-style names)."""
    if "hidden_size" in cfg:  # native transformers phi, or ours
        fields = {k: v for k, v in cfg.items() if k not in ("model_type", "architectures", "auto_map", "transformers_version")}
        return PhiConfig(**fields)
    n_embd, n_head = cfg["n_embd"], cfg["n_head"]
    return PhiConfig(
        vocab_size=cfg["vocab_size"], hidden_size=n_embd, intermediate_size=cfg.get("n_inner") or 4 * n_embd,
        num_hidden_layers=cfg["n_layer"], num_attention_heads=n_head, num_key_value_heads=cfg.get("n_head_kv") or n_head,
        max_position_embeddings=cfg.get("n_positions", 2048), layer_norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
        hidden_act=cfg.get("activation_function", "gelu_new"), resid_pdrop=cfg.get("resid_pdrop", 0.0),
        embd_pdrop=cfg.get("embd_pdrop", 0.0), attention_dropout=cfg.get("attn_pdrop", 0.0),
        partial_rotary_factor=cfg.get("rotary_dim", 32) / (n_embd // n_head),
        bos_token_id=cfg.get("bos_token_id", 50256), eos_token_id=cfg.get("eos_token_id", 50256),
    )


# What the old remote code wrote into config.json besides the shape (model_type and class per layout).
LEGACY_IDENTITY = {
    "mixformer": {"model_type": "mixformer-sequential", "architectures": ["MixFormerSequentialForCausalLM"],
                  "architecture": {"block_cls": "parallel", "mixer": {}, "mlp": {"mlp_cls": "mlp"}}},
    "phi-msft": {"model_type": "phi-msft", "architectures": ["PhiForCausalLM"], "flash_attn": False,
                 "flash_rotary": False, "fused_dense": False, "n_head_kv": None},
}


def config_to_legacy(config: PhiConfig, layout: str) -> dict:
    """config.json of `layout`'s remote code (GPT-2 style names: n_embd, n_layer, n_head, rotary_dim, ...)."""
    if layout not in LEGACY_IDENTITY:
        raise ValueError(f"unknown checkpoint layout {layout!r}; known: {', '.join(LEGACY_IDENTITY)}")
    head_dim = config.hidden_size // config.num_attention_heads
    return {
        **LEGACY_IDENTITY[layout], "vocab_size": config.vocab_size, "n_positions": config.max_position_embeddings,
        "n_embd": config.hidden_size, "n_layer": config.num_hidden_layers, "n_head": config.num_attention_heads,
        "n_inner": config.intermediate_size, "rotary_dim": int(head_dim * config.rope_parameters["partial_rotary_factor"]),
        "activation_function": config.hidden_act, "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.resid_pdrop, "embd_pdrop": config.embd_pdrop, "attn_pdrop": config.attention_dropout,
        "initializer_range": config.initializer_range, "tie_word_embeddings": False,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
    }


def load_state_dict_file(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu", weights_only=True))
    return state


def load_any(folder: str | Path):
    """Load a checkpoint folder in any known layout as our PhiForCausalLM (strict: names missing/unexpected keys)."""
    from .modeling_phi import PhiForCausalLM

    folder = Path(folder)
    config = config_from_legacy(json.loads((folder / "config.json").read_text()))
    state = to_native(load_state_dict_file(folder))
    # Through from_pretrained, so transformers' weight conversion fuses q/k/v as for any native checkpoint.
    model, info = PhiForCausalLM.from_pretrained(None, config=config, state_dict=state, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ValueError(f"{folder}: checkpoint does not fit the phi architecture; missing keys: "
                         f"{sorted(info['missing_keys'])[:10]}, unexpected keys: {sorted(info['unexpected_keys'])[:10]}")
    return model


def native_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under transformers' native Phi keys (q_proj / k_proj / v_proj, not our fused qkv_proj),
    through the same reverse conversion `save_pretrained` applies."""
    from transformers.core_model_loading import revert_weight_conversion

    return revert_weight_conversion(model, model.state_dict())


def export_native_phi(model, out_dir: str | Path) -> Path:
    """Write `model` as transformers' own `phi` (model_type "phi", no custom code) for vLLM / TGI / llama.cpp."""
    from safetensors.torch import save_file
    from transformers import PhiConfig as HFPhiConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in model.config.to_dict().items()
              if k not in ("model_type", "auto_map", "architectures", "transformers_version")}
    hf_config = HFPhiConfig(**fields)
    hf_config.architectures = ["PhiForCausalLM"]
    hf_config.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in native_state_dict(model).items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return out


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "generation_config.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="checkpoint folder (native, ours, mixformer or phi-msft)")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--to", choices=["ours", "phi", "mixformer", "phi-msft"], default="ours",
                        help="ours: our model_type + custom code (default); phi: transformers' native phi; "
                             "mixformer / phi-msft: Microsoft's older remote-code layouts (weights + config.json)")


def main(args: argparse.Namespace) -> None:
    model = load_any(args.input)
    out = Path(args.output)
    if args.to == "ours":
        model.save_pretrained(out)
    elif args.to == "phi":
        export_native_phi(model, out)
    else:
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in from_native(native_state_dict(model), args.to).items()},
                  str(out / "model.safetensors"), metadata={"format": "pt"})
        # The layout's own modeling code is not ours to ship: the folder runs with the original repo's files.
        (out / "config.json").write_text(json.dumps(config_to_legacy(model.config, args.to), indent=2) + "\n")
    for name in TOKENIZER_FILES:
        if (Path(args.input) / name).is_file() and not (out / name).exists():
            shutil.copy(Path(args.input) / name, out / name)
    print(f"wrote {args.to} checkpoint to {out}")
