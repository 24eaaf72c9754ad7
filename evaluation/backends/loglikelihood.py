"""Log-likelihood scoring with a local transformers model (the multiple-choice evaluator's engine).

Each choice is scored by the summed log-likelihood of its continuation (tokenised as lm-evaluation-harness
does; evaluation/multiple_choice.py builds the requests). Speed, with lm-eval's numbers: the context of a
document runs once and its KV cache serves all of its choices; a prefix every document of a batch shares
(MMLU's description and shots) runs once per batch; only the scored positions go through the LM head;
identical rows and positions run once. Prompts longer than the model's window are truncated from the left
exactly as lm-eval does (those run unshared).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Request = tuple[list[int], list[int]]  # (context tokens, continuation tokens)
MIN_COMMON_PREFIX = 16  # shorter prefixes shared by a whole batch ("Question:") are not worth a pass


def resolve_max_length(config: Any, tokenizer: Any, default: int = 2048) -> int:
    """The context length lm-eval uses: the config's position limit, else the tokenizer's, else 2048."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if getattr(cfg, attr, None) is not None:
            return int(getattr(cfg, attr))
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit < 10**30 else default


class LoglikelihoodScorer:
    """Summed log-likelihood (and greedy match) of continuations, one group of requests per document.

    The requests of a group share a token prefix (their context, or the part of WinoGrande's sentence before
    the blank): it runs once, left-padded in a batch of groups, after the part all groups of the batch share,
    and its KV cache is copied to each of the group's rows, which then run only their own tokens. The LM head runs only on the scored positions when
    the model is a base model plus an output projection (checked once on a probe, not assumed). Sequences
    longer than the model's window fall back to lm-eval's layout (one row each, truncated from the left).
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 32, max_length: int | None = None):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.batch_size = max(1, batch_size)
        self.max_length = max_length or resolve_max_length(model.config, tokenizer)
        self.body, self.head = _split_head(model, self.device)

    def score(self, groups: Sequence[Sequence[Request]]) -> list[list[tuple[float, bool]]]:
        import torch

        results: list[list[Any]] = [[None] * len(g) for g in groups]
        plans = [self._shared_prefix(g) for g in groups]
        shared = sorted((i for i, p in enumerate(plans) if p > 0),
                        key=lambda i: (-plans[i], -max(len(c) + len(t) for c, t in groups[i])))
        flat = sorted(((i, j) for i, p in enumerate(plans) if p == 0 for j in range(len(groups[i]))),
                      key=lambda ij: -sum(map(len, groups[ij[0]][ij[1]])))
        # Counted for the run's record: how many documents took the shared-prefix path.
        self.last_counts = {"shared_prefix_docs": len(shared), "unshared_docs": len(groups) - len(shared)}
        with torch.inference_mode():
            for batch in self._batches(shared, groups, plans):
                self._score_shared(batch, groups, plans, results)
            for start in range(0, len(flat), self.batch_size):
                self._score_flat(flat[start:start + self.batch_size], groups, results)
        return results

    def _shared_prefix(self, group: Sequence[Request]) -> int:
        """Tokens the group's inputs share, stopping before the first scored position (0 = no sharing)."""
        inputs = [ctx + cont for ctx, cont in group]
        if any(len(seq) > self.max_length + 1 for seq in inputs):
            return 0
        shortest = min(len(seq) for seq in inputs) - 1
        common = 0
        while common < shortest and all(seq[common] == inputs[0][common] for seq in inputs):
            common += 1
        return max(0, min(common, min(len(ctx) for ctx, _ in group) - 1))

    def _batches(self, order: list[int], groups, plans):
        batch, rows = [], 0
        for i in order:
            n = len({tuple((ctx + cont)[plans[i]:-1]) for ctx, cont in groups[i]})
            if batch and rows + n > self.batch_size:
                yield batch
                batch, rows = [], 0
            batch.append(i)
            rows += n
        if batch:
            yield batch

    def _forward(self, **inputs):
        """Hidden states (body only) when the head is split off, else the full logits; and the cache."""
        if self.body is not None:
            out = self.body(**inputs)
            return out.last_hidden_state, out.past_key_values
        out = self.model(**inputs)
        return out.logits, out.past_key_values

    def _score_shared(self, batch: list[int], groups, plans, results) -> None:
        import torch

        cache, common = self._common_prefix(batch, groups, plans)
        # The rest of each group's prefix, left-padded behind the common part.
        width = max(plans[i] for i in batch) - common
        prefix = torch.zeros(len(batch), width, dtype=torch.long)
        prefix_mask = torch.zeros(len(batch), common + width, dtype=torch.long)
        prefix_mask[:, :common] = 1
        for b, i in enumerate(batch):
            ctx, cont = groups[i][0]
            p = plans[i]
            prefix[b, width - (p - common):] = torch.tensor((ctx + cont)[common:p], dtype=torch.long)
            prefix_mask[b, common + width - (p - common):] = 1
        if width:
            positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)[:, common:]
            _, cache = self._forward(input_ids=prefix.to(self.device), attention_mask=prefix_mask.to(self.device),
                                     position_ids=positions.to(self.device), past_key_values=cache, use_cache=True)
        # One row per distinct suffix of each group (MMLU's and BoolQ's one-token answers share one row).
        rows: dict[tuple[int, tuple[int, ...]], int] = {}
        row_of, owner = {}, []
        for b, i in enumerate(batch):
            for j, (ctx, cont) in enumerate(groups[i]):
                key = (b, tuple((ctx + cont)[plans[i]:-1]))
                if key not in rows:
                    rows[key] = len(rows)
                    owner.append(b)
                row_of[(i, j)] = rows[key]
        cache = _select_rows(cache, torch.tensor(owner, device=self.device))
        length = max(len(k[1]) for k in rows)
        suffix = torch.zeros(len(rows), length, dtype=torch.long)
        suffix_mask = torch.zeros(len(rows), length, dtype=torch.long)
        for (_, tokens), r in rows.items():
            suffix[r, :len(tokens)] = torch.tensor(tokens)
            suffix_mask[r, :len(tokens)] = 1
        starts = torch.tensor([plans[batch[b]] for b in owner])
        out, _ = self._forward(input_ids=suffix.to(self.device),
                               attention_mask=torch.cat([prefix_mask[owner], suffix_mask], 1).to(self.device),
                               position_ids=(starts[:, None] + torch.arange(length)).to(self.device),
                               past_key_values=cache, use_cache=True)
        # Continuation token k of request (i, j) is predicted at suffix position len(ctx) - 1 - p + k.
        picks = [(i, j, row_of[(i, j)], len(ctx) - 1 - plans[i], cont)
                 for i in batch for j, (ctx, cont) in enumerate(groups[i])]
        self._gather(out, picks, results)

    def _common_prefix(self, batch: list[int], groups, plans) -> tuple[Any, int]:
        """Run the tokens all groups of the batch share (MMLU's description and shots) once; (cache, length)."""
        import torch

        if len(batch) < 2:
            return None, 0
        first = [groups[i][0][0] + groups[i][0][1] for i in batch]
        limit, common = min(plans[i] for i in batch), 0
        while common < limit and all(seq[common] == first[0][common] for seq in first):
            common += 1
        if common < MIN_COMMON_PREFIX:
            return None, 0
        _, cache = self._forward(input_ids=torch.tensor([first[0][:common]], device=self.device), use_cache=True)
        return _select_rows(cache, torch.zeros(len(batch), dtype=torch.long, device=self.device)), common

    def _score_flat(self, items: list[tuple[int, int]], groups, results) -> None:
        import torch

        # lm-eval's layout: context + continuation minus the last token, left-truncated to the window;
        # identical inputs (one-token answers to one context) run once.
        rows: dict[tuple[int, ...], int] = {}
        picks = []
        for i, j in items:
            ctx, cont = groups[i][j]
            tokens = tuple((ctx + cont)[-(self.max_length + 1):][:-1])
            r = rows.setdefault(tokens, len(rows))
            picks.append((i, j, r, len(tokens) - len(cont), cont))
        width = max(len(x) for x in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for x, r in rows.items():
            ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = 1
        out, _ = self._forward(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False)
        self._gather(out, picks, results)

    def _gather(self, out, picks, results) -> None:
        import torch

        rows, positions, targets, owners = [], [], [], []
        for n, (_, _, row, start, cont) in enumerate(picks):
            rows += [row] * len(cont)
            positions += range(start, start + len(cont))
            targets += cont
            owners += [n] * len(cont)
        dev = out.device
        # Each scored position once (one-token answers to one context all read the same position).
        where, inverse = torch.unique(torch.tensor(rows) * out.shape[1] + torch.tensor(positions), return_inverse=True)
        picked = out[(where // out.shape[1]).to(dev), (where % out.shape[1]).to(dev)]
        logits = self.head(picked) if self.body is not None else picked
        # log_softmax in fp32, over the model's whole output vocabulary, as lm-eval.
        scored, inverse = torch.log_softmax(logits.float(), -1), inverse.to(dev)
        target_t = torch.tensor(targets, device=dev)
        token_ll = scored[inverse, target_t].double().cpu()
        greedy = (scored.argmax(-1)[inverse] == target_t).cpu()
        owner_t = torch.tensor(owners)
        sums = torch.zeros(len(picks), dtype=torch.float64).index_add_(0, owner_t, token_ll)
        misses = torch.zeros(len(picks), dtype=torch.long).index_add_(0, owner_t, (~greedy).long())
        for n, (i, j, *_rest) in enumerate(picks):
            results[i][j] = (float(sums[n]), bool(misses[n] == 0))


def _split_head(model: Any, device: Any) -> tuple[Any, Any]:
    """(body, head) if logits == head(body(x).last_hidden_state) on a probe, else (None, None).

    Most causal LMs are a base model plus an output projection; some scale or cap their logits on top,
    so the split is checked, not assumed.
    """
    import torch

    body, head = getattr(model, "base_model", None), model.get_output_embeddings()
    if body is None or body is model or head is None:
        return None, None
    probe = torch.arange(1, 9, device=device)[None] % model.config.vocab_size
    with torch.inference_mode():
        try:
            full = model(input_ids=probe, use_cache=False).logits
            split = head(body(input_ids=probe, use_cache=False).last_hidden_state)
        except Exception:  # a body that does not take these inputs: use the whole model
            return None, None
    same = full.shape == split.shape and torch.allclose(full.float(), split.float(), atol=1e-5, rtol=1e-4)
    return (body, head) if same else (None, None)


def _select_rows(cache: Any, rows: Any) -> Any:
    """The cache with its batch rows picked (and repeated) by `rows`."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(rows)
        return cache
    return tuple(tuple(t[rows] for t in layer) for layer in cache)  # legacy tuple caches
