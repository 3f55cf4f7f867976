"""Exact-match evaluation on the held-out split: sampled accuracy (the objective), greedy
accuracy and pass@k, summed over the workers' shards.
"""

from __future__ import annotations

from typing import Any

from autopipe import metrics as M
from autopipe.trial.settings import TrialSettings
from autopipe.trial.tasks import TaskData, is_correct
from autopipe.trial.training import dist_info


def evaluate(
    model: Any, tokenizer: Any, data: TaskData, settings: TrialSettings, seed: int
) -> dict[str, float]:
    """Exact match on the held-out split: sampled (the objective), greedy and pass@k.

    With several workers each rank scores its shard and the counts are summed.
    """
    import torch

    rank, world = dist_info()
    examples = data.eval[rank::world]
    device = next(model.parameters()).device
    model.eval()
    k = settings.eval_samples
    n_ok_sampled = n_ok_greedy = n_pass = 0
    gen = torch.Generator(device="cpu").manual_seed(seed)
    batch = 64
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            chunk = examples[i : i + batch]
            enc = tokenizer([e.prompt for e in chunk], return_tensors="pt", padding=True)
            enc = {
                key: v.to(device)
                for key, v in enc.items()
                if key in ("input_ids", "attention_mask")
            }
            plen = enc["input_ids"].shape[1]
            common = dict(
                max_new_tokens=settings.max_completion_length,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            greedy = model.generate(**enc, do_sample=False, **common)
            # Sampling draws from torch's default generator: fork it so evaluation is seeded
            # without touching the caller's random state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                sampled = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=max(settings.eval_temperature, 1e-3),
                    top_k=0,
                    top_p=1.0,
                    num_return_sequences=k,
                    **common,
                )
            g_text = tokenizer.batch_decode(greedy[:, plen:], skip_special_tokens=True)
            s_text = tokenizer.batch_decode(sampled[:, plen:], skip_special_tokens=True)
            for j, ex in enumerate(chunk):
                n_ok_greedy += is_correct(g_text[j], ex.answer, data.answer_kind, data.choices)
                oks = [
                    is_correct(s_text[j * k + r], ex.answer, data.answer_kind, data.choices)
                    for r in range(k)
                ]
                n_ok_sampled += sum(oks)
                n_pass += any(oks)
    counts = torch.tensor([n_ok_sampled, n_ok_greedy, n_pass, len(examples)], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(counts)
    n = max(1.0, float(counts[3]))
    model.train()
    return {
        M.ACCURACY: float(counts[0]) / (n * k),
        M.ACCURACY_GREEDY: float(counts[1]) / n,
        M.PASS_AT_K: float(counts[2]) / n,
    }
