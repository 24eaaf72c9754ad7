# Copyright 2026 The phi-textbooks authors.
"""Configuration of the phi-1 / phi-1.5 reproduction model, with the papers' shapes as named presets.

`PhiConfig` is transformers' `PhiConfig` (every field, same meaning, so a `config.json` of
`microsoft/phi-1_5` loads) under its own `model_type`, so that our checkpoints load through the Auto
classes, with our code, in environments that have transformers but not this package.
Shapes: phi-1 (arXiv:2306.11644) and phi-1.5 (arXiv:2309.05463), 1.3B, 24 layers x 2048; phi-1-small 350M.
"""

from __future__ import annotations

from typing import Any

from transformers import PhiConfig as _TransformersPhiConfig

# The CodeGen-350M-mono tokenizer phi uses: <|endoftext|> (50256) is bos, eos and unk. transformers'
# PhiConfig defaults (bos=1, eos=2) are wrong for it. The tiny presets use a BPE we train ourselves,
# whose first token (id 0) is <|endoftext|>.
CODEGEN_EOS = 50256
PHI_SHAPE = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32)
CODEGEN = dict(vocab_size=51200, bos_token_id=CODEGEN_EOS, eos_token_id=CODEGEN_EOS, max_position_embeddings=2048)
OWN_BPE = dict(bos_token_id=0, eos_token_id=0)

PRESETS: dict[str, dict[str, Any]] = {
    # phi-1 pretraining: attention and residual dropout 0.1 (phi-1 paper, section 2).
    "phi-1": {**PHI_SHAPE, **CODEGEN, "resid_pdrop": 0.1, "attention_dropout": 0.1},
    "phi-1-small": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=20, num_attention_heads=16,
                        resid_pdrop=0.1, attention_dropout=0.1, **CODEGEN),
    # phi-1.5's report gives no dropout; the released config has none.
    "phi-1.5": {**PHI_SHAPE, **CODEGEN},
    # CPU presets, head_dim 64 like the real models so partial RoPE covers the same 32 dims.
    "tiny": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                 vocab_size=8192, max_position_embeddings=1024, **OWN_BPE),
    "small": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                  vocab_size=16384, max_position_embeddings=2048, **OWN_BPE),
}
PRESET_ALIASES = {"phi-1_5": "phi-1.5", "phi-1.5-small": "phi-1-small"}


class PhiConfig(_TransformersPhiConfig):
    """transformers' PhiConfig under model_type `phi_textbooks`, with `from_preset` for the papers' shapes."""

    model_type = "phi_textbooks"
    # Tensor parallel: native Phi's plan shards q/k/v column-wise; ours holds them as one fused qkv_proj, which
    # a plain column split would cut across q / k / v, so attention stays replicated and only the MLP is sharded.
    base_model_tp_plan = {"layers.*.mlp.fc1": "colwise", "layers.*.mlp.fc2": "rowwise"}

    def __setattr__(self, key: str, value: Any) -> None:
        # A config.json of transformers' own phi (model_type "phi") would set an instance `model_type` that hides
        # ours; transformers picks weight conversions (our fused q/k/v, modeling_phi.QKV_CONVERSION) by it.
        if key != "model_type":
            super().__setattr__(key, value)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PhiConfig:
        """A named preset (`phi-1`, `phi-1-small`, `phi-1.5`, `tiny`, `small`), with field overrides."""
        key = PRESET_ALIASES.get(name, name)
        if key not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[key], **overrides})

    def set_tokenizer(self, tokenizer: Any, pad_to_multiple_of: int = 64) -> PhiConfig:
        """Size the vocab for `tokenizer` (padded, as phi pads 50295 to 51200) and take its bos/eos ids."""
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos token; phi needs <|endoftext|> as bos/eos")
        needed = len(tokenizer)
        if self.vocab_size < needed:
            self.vocab_size = -(-needed // pad_to_multiple_of) * pad_to_multiple_of
        self.eos_token_id = eos
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        return self


__all__ = ["PhiConfig", "PRESETS"]
