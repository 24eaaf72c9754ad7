# Copyright 2026 The phi-textbooks authors.
"""PhiForCausalLM: the phi-1 / phi-1.5 decoder, readable top to bottom.

Sources: "Textbooks Are All You Need" (phi-1, arXiv:2306.11644) and "Textbooks Are All You Need II"
(phi-1.5, arXiv:2309.05463); the weight layout is transformers' native `PhiForCausalLM`, so Hub
checkpoints (`microsoft/phi-1`, `microsoft/phi-1_5`) load as they are.

Data meets, in order: token embedding -> N parallel blocks `x + attn(ln(x)) + mlp(ln(x))` (one
LayerNorm per block, partial rotary on the first 32 dims of each 64-dim head) -> final LayerNorm ->
untied lm_head with bias. Attention goes through transformers' registry (eager / sdpa /
flash_attention_2 / flex_attention), masks through `create_causal_mask`, caches through `Cache`.

Packed sequences: pass per-document `position_ids` (restarting at 0) and no cache; the mask is then
block-diagonal. Training never builds a KV cache (`use_cache` is off in train mode), because with a
cache transformers no longer derives document boundaries from position_ids.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import Concatenate, WeightConverter
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_phi import PhiConfig

# transformers 5.24 renamed the cache keyword of masks, layers and outputs from `past_key_values` to `cache`
# (the old name goes in 5.40). Ask the installed release which one it speaks instead of comparing versions.
CACHE_KEY = "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"

# Checkpoints keep transformers' native Phi keys (q_proj, k_proj, v_proj), so the Hub's phi-1 / phi-1.5 and
# `transformers.PhiForCausalLM` read our folders; in memory the three are one `qkv_proj` (rows q, then k, then v).
# transformers' weight conversion concatenates them at `from_pretrained` and `save_pretrained` splits them back
# (the reverse op). Registered under our model_type: transformers applies no mapping to custom code unless its
# author registered it, which this line does, also when the file runs as remote code.
QKV_CONVERSION = [WeightConverter(source_patterns=["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                                  target_patterns="self_attn.qkv_proj", operations=[Concatenate(dim=0)])]
register_checkpoint_conversion_mapping(PhiConfig.model_type, QKV_CONVERSION, overwrite=True)


def check_implemented(config: PhiConfig) -> None:
    """Refuse config fields this file does not implement, rather than silently build a different model."""
    head_dim = config.hidden_size // config.num_attention_heads
    unsupported = {
        "qk_layernorm": (config.qk_layernorm, False),
        "num_key_value_heads": (config.num_key_value_heads, config.num_attention_heads),
        "head_dim": (getattr(config, "head_dim", None) or head_dim, head_dim),
    }
    for field, (value, supported) in unsupported.items():
        if value != supported:
            raise ValueError(f"PhiConfig.{field}={value!r} is not implemented by modeling_phi (phi-1 / phi-1.5 use "
                             f"{supported!r}); set it to {supported!r} or use transformers' native Phi")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"PhiConfig.hidden_size={config.hidden_size} is not a multiple of "
                         f"num_attention_heads={config.num_attention_heads}")
    rope_type = config.rope_parameters.get("rope_type", "default")
    if rope_type != "default" and rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"PhiConfig.rope_parameters['rope_type']={rope_type!r} is unknown; "
                         f"known: default, {', '.join(ROPE_INIT_FUNCTIONS)}")


class PhiRotaryEmbedding(nn.Module):
    """cos / sin tables for the rotated part of each head (partial_rotary_factor x head_dim dims)."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        # Read by `dynamic_rope_update` for the dynamic / longrope variants.
        self.max_seq_len_cached = self.original_max_seq_len = config.max_position_embeddings
        inv_freq, self.attention_scaling = self.compute_inv_freq()
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    def compute_inv_freq(self) -> tuple[torch.Tensor, float]:
        # linear, dynamic, yarn, ...: transformers' own definitions, which honour partial_rotary_factor too.
        init = ROPE_INIT_FUNCTIONS.get(self.rope_type, self.compute_default_rope_parameters)
        return init(self.config, None)

    @staticmethod
    def compute_default_rope_parameters(config: PhiConfig, device: torch.device | None = None,
                                        **kwargs) -> tuple[torch.Tensor, float]:
        """Plain RoPE over the first partial_rotary_factor x head_dim dims; also called by transformers' init."""
        head_dim = config.hidden_size // config.num_attention_heads
        dim = int(head_dim * config.rope_parameters.get("partial_rotary_factor", 0.5))
        base = config.rope_parameters["rope_theta"]
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim)), 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Always in fp32: bf16 positions lose integer precision beyond 256.
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device, torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


class RotaryQKV(torch.autograd.Function):
    """Split the fused q/k/v projection into heads and rotate q and k (partial rotary, rotate-half convention).

    One function instead of per-tensor slice / rotate_half / cat chains: the forward writes q, k (rotated, in fp32
    math, rounded once to the projection's dtype: what native's fp32 cos/sin then autocast's cast do) and v into
    one buffer; the backward rotates the incoming gradient back (the inverse rotation) into one buffer for the
    fused projection, so autograd builds no zero-filled slice gradients.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
        batch, seq_len, width = qkv.shape
        x = qkv.view(batch, seq_len, 3, width // (3 * head_dim), head_dim)
        half = cos.shape[-1] // 2  # cos / sin hold cat(freqs, freqs): both halves are the same
        cos, sin = cos[:, :, None, None, :half], sin[:, :, None, None, :half]
        ctx.save_for_backward(cos, sin)
        out = x.clone()
        x1, x2 = x[:, :, :2, :, :half], x[:, :, :2, :, half:2 * half]
        out[:, :, :2, :, :half] = x1 * cos - x2 * sin
        out[:, :, :2, :, half:2 * half] = x2 * cos + x1 * sin
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        half = cos.shape[-1]
        g1, g2 = grad[:, :, :2, :, :half], grad[:, :, :2, :, half:2 * half]
        out = grad.clone()
        out[:, :, :2, :, :half] = g1 * cos + g2 * sin
        out[:, :, :2, :, half:2 * half] = g2 * cos - g1 * sin
        return out.flatten(2), None, None, None


# Logits elements per block of the loss: 4 MB in fp32, which stays in cache. Measured (bf16 step, CPU time, one
# thread, ours / native): blocks of 256k-1M elements 1.52x tiny / 1.33x small, of 4M 1.35x / 1.26x.
LOSS_BLOCK = 1 << 20


class CrossEntropyRows(torch.autograd.Function):
    """Per-row cross entropy `-log_softmax(x)[target]` (0 where target == ignore_index), in fp32 math.

    transformers' loss upcasts the whole (tokens x vocab) logits to fp32, keeps fp32 log-probabilities for the
    backward and zero-fills a one-hot gradient: five full passes over the largest tensor of a small model's step.
    Here rows go through in blocks of `LOSS_BLOCK` logits: the forward keeps nothing but the logits it was given, the
    backward recomputes the softmax of a block and writes `(softmax - onehot) * grad` straight into a gradient of
    the logits' own dtype.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
        rows = max(1, LOSS_BLOCK // logits.shape[1])
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
        logp = [torch.log_softmax(block.float(), dim=-1).gather(1, t[:, None])
                for block, t in zip(logits.split(rows), target.split(rows))]
        ctx.save_for_backward(logits, target, valid)
        ctx.rows = rows
        return -torch.cat(logp).squeeze(1) * valid

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, target, valid = ctx.saved_tensors
        grad = (grad * valid)[:, None]  # ignored rows get no gradient
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.rows):
            end = min(start + ctx.rows, logits.shape[0])
            probs = torch.softmax(logits[start:end].float(), dim=-1)
            probs[torch.arange(end - start), target[start:end]] -= 1.0
            torch.mul(probs, grad[start:end], out=out[start:end])
        return out, None, None


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor | None, vocab_size: int,
                   num_items_in_batch: torch.Tensor | int | None = None, ignore_index: int = -100,
                   shift_labels: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """transformers' ForCausalLMLoss (shift by one, mean over non-ignored tokens or sum / num_items_in_batch)."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    target = shift_labels.reshape(-1).to(logits.device)
    rows = CrossEntropyRows.apply(logits.reshape(-1, vocab_size), target, ignore_index)
    if num_items_in_batch is None:
        return rows.sum() / (target != ignore_index).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(rows.device)
    return rows.sum() / num_items_in_batch


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Reference attention: softmax in fp32 (phi overflows in fp16 otherwise)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class PhiAttention(nn.Module):
    """Multi-head attention with partial rotary; fused q/k/v projection and dense, both with bias."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.num_key_value_groups = 1  # read by transformers' sdpa / flash wrappers
        # q, k and v in one matmul; checkpoints keep native's q_proj / k_proj / v_proj (QKV_CONVERSION).
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None, cache: Cache | None = None,
                **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq_len, _ = hidden_states.shape
        qkv = RotaryQKV.apply(self.qkv_proj(hidden_states), *position_embeddings, self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in qkv.unbind(2))  # each (batch, heads, seq, head_dim)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        # kwargs carry position_ids: flash_attention_2's varlen path separates packed documents with them.
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                                     eager_attention_forward)
        out, weights = attention(self, query, key, value, attention_mask, scaling=self.scaling,
                                 dropout=self.config.attention_dropout if self.training else 0.0, **kwargs)
        return self.dense(out.reshape(batch, seq_len, -1)), weights


class PhiMLP(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        # gelu_new is exactly the tanh approximation; torch's fused kernel is one op instead of six.
        self.act = (lambda x: F.gelu(x, approximate="tanh")) if config.hidden_act in ("gelu_new", "gelu_pytorch_tanh") \
            else _activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    from transformers.activations import ACT2FN

    return ACT2FN[name]


class PhiDecoderLayer(GradientCheckpointingLayer):
    """Parallel block: attention and MLP read the same LayerNorm output and add to the residual."""

    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = PhiAttention(config, layer_idx)
        self.mlp = PhiMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, cache: Cache | None = None,
                **kwargs) -> torch.Tensor:
        normed = self.input_layernorm(hidden_states)
        attn_out, _ = self.self_attn(normed, position_embeddings, attention_mask, cache, **kwargs)
        return hidden_states + self.resid_dropout(attn_out) + self.resid_dropout(self.mlp(normed))


class PhiPreTrainedModel(PreTrainedModel):
    """Weight init and the capabilities transformers checks (attention backends, cache classes, recorded outputs)."""

    config_class = PhiConfig
    config: PhiConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PhiDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # output_hidden_states / output_attentions are collected by transformers' hooks on these modules.
    _can_record_outputs = {"hidden_states": PhiDecoderLayer, "attentions": PhiAttention}

    def __init__(self, config: PhiConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        check_implemented(config)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # from_pretrained builds the model on the meta device: the rotary tables are not in the checkpoint
        # (non-persistent), so they must be recomputed here or they stay garbage.
        if isinstance(module, PhiRotaryEmbedding):
            inv_freq, _ = module.compute_inv_freq()
            module.inv_freq.copy_(inv_freq)
            module.original_inv_freq.copy_(inv_freq)


class PhiModel(PhiPreTrainedModel):
    """Embedding -> decoder layers -> final LayerNorm."""

    def __init__(self, config: PhiConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.layers = nn.ModuleList([PhiDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = PhiRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    @capture_outputs
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, use_cache: bool | None = None,
                **kwargs) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        # A cache in training would silently merge packed documents (see module docstring).
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(past, past + inputs_embeds.shape[1], device=inputs_embeds.device)[None]

        mask = create_causal_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  position_ids=position_ids, **{CACHE_KEY: cache})
        hidden_states = self.embed_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, position_embeddings, cache, position_ids=position_ids, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.final_layernorm(hidden_states),
                                       **{CACHE_KEY: cache if use_cache else None})


class PhiForCausalLM(PhiPreTrainedModel, GenerationMixin):
    """The phi language model: PhiModel plus an untied lm_head with bias; loss ignores label -100."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # only if config.tie_word_embeddings
    # Tensor / pipeline parallel plans, as native Phi: lm_head column-sharded, then gathered.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: PhiConfig):
        super().__init__(config)
        self.model = PhiModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=True)
        self.post_init()

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.LongTensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                **kwargs) -> CausalLMOutputWithPast:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, return_dict=True, **kwargs)
        # Generation only needs the last position's logits: skip the (vocab x seq) matmul for the rest.
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(out.last_hidden_state[:, keep, :])
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                      attentions=out.attentions, **{CACHE_KEY: getattr(out, CACHE_KEY)})


__all__ = ["PhiForCausalLM", "PhiModel", "PhiPreTrainedModel"]
