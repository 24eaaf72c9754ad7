"""Build a phi model from a preset (random weights), save it Hub-style, reload it and generate.

A smoke test of the model stack in seconds: config preset -> PhiForCausalLM -> save_pretrained (with
custom code) -> AutoModelForCausalLM.from_pretrained -> generate.

Example:
    phi demo --preset tiny --output runs/demo --prompt "def fibonacci(n):"
"""

from __future__ import annotations

import argparse
import os

from evaluation.data_paths import shared_data_dir

DEFAULT_TOKENIZER = shared_data_dir() / "tokenizers" / "phi-2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="tiny, small, phi-1-small, phi-1, phi-1.5")
    parser.add_argument("--tokenizer", default=os.environ.get("PHI_TOKENIZER", str(DEFAULT_TOKENIZER)),
                        help="tokenizer folder or Hub id (default: the phi CodeGen tokenizer in ../shared/data)")
    parser.add_argument("--output", default="runs/demo")
    parser.add_argument("--prompt", default="def fibonacci(n):")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)


def main(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modeling_phi import PhiConfig, PhiForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = PhiConfig.from_preset(args.preset).set_tokenizer(tokenizer)
    torch.manual_seed(args.seed)
    model = PhiForCausalLM(config)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    n_params = sum(p.numel() for p in model.parameters())
    model = AutoModelForCausalLM.from_pretrained(args.output, trust_remote_code=True).eval()
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    print(f"{args.preset}: {n_params / 1e6:.1f}M parameters, saved to {args.output}")
    print("untrained sample (random weights):", repr(tokenizer.decode(out[0])))
