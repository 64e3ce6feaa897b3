#!/usr/bin/python3
"""PyTorch reference for `deno task bench finetune`: what a Hugging Face user gets by default when fine-tuning
the same bert-mini on the same features (exported by finetune.ts, the job's own tokenization).

  /usr/bin/python3 tests/bench/finetune_torch.py FEATURES.json

FEATURES.json: {"task": "ner"|"classify", "config": {HF config.json}, "num_labels": K, "batch": B, "steps": S,
"seed": N, "threads": 2, "rows": [[ids, label or token labels], ...]}.

The model is the HF-named torch BERT of tests/parity/make_fixtures.py (transformers is not installable here) with
what transformers' modeling_bert.py adds in training: dropout on the embeddings, the attention probabilities, both
residual branches and the classifier input, and torch's own GELU. Batches are HF's defaults: RandomSampler order,
DataCollatorWithPadding / DataCollatorForTokenClassification padding to each batch's longest row (labels padded with
-100). AdamW (decay off for biases and LayerNorm), 10% linear warmup then linear decay, gradient clipping at 1.0.

Prints one JSON line: {"bench":"finetune_job","task":..,"impl":"pytorch","tokens_per_s":..,"padding_fraction":..}.
tokens_per_s counts real (non-padding) tokens over steps 2..S (the first pays for allocation), collation included,
as the Deno side counts the job's steps.
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
import make_fixtures  # noqa: E402
from make_fixtures import BertForSequenceClassification, BertForTokenClassification  # noqa: E402


def hf_training_model(task, config, K):
    """make_fixtures' model (dropout-free, for parity) with transformers' training-time dropout and GELU."""
    make_fixtures.gelu = F.gelu  # BertIntermediate calls the module-level gelu; HF uses torch's kernel
    p_hidden, p_attn = config["hidden_dropout_prob"], config["attention_probs_dropout_prob"]
    hidden_drop, attn_drop = nn.Dropout(p_hidden), nn.Dropout(p_attn)

    def attention(s, x, mask_add):  # make_fixtures.BertSelfAttention.forward + HF's dropout on the probabilities
        Bx, Tx, C = x.shape
        split = lambda t: t.view(Bx, Tx, s.NH, s.HS).permute(0, 2, 1, 3)  # (B, NH, T, HS)
        q, k, v = split(s.query(x)), split(s.key(x)), split(s.value(x))
        scores = q @ k.transpose(-1, -2) / (s.HS ** 0.5) + mask_add  # (B, NH, T, T)
        probs = attn_drop(scores.softmax(-1))
        return (probs @ v).permute(0, 2, 1, 3).reshape(Bx, Tx, C)

    make_fixtures.BertSelfAttention.forward = attention
    model = BertForTokenClassification(config, K, False) if task == "ner" else BertForSequenceClassification(
        config, K, False)
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            nn.init.normal_(mod.weight, std=config["initializer_range"])
        if isinstance(mod, nn.Linear):
            nn.init.zeros_(mod.bias)
    for name, mod in model.named_modules():
        # HF: LayerNorm(dropout(dense(h)) + x) in both residual branches; dropout(LayerNorm(embeddings))
        if name.endswith("output.dense") or name == "bert.embeddings":
            mod.register_forward_hook(lambda _m, _i, out: hidden_drop(out))
    # HF: classifier(dropout(sequence_output or pooled_output))
    model.classifier.register_forward_pre_hook(lambda _m, inputs: (hidden_drop(inputs[0]),))
    return model


def collate(rows, task):
    """The batch padded to its longest row (HF's default collators), labels padded with -100."""
    T = max(len(ids) for ids, _ in rows)
    B = len(rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    tokens = torch.full((B, T), -100, dtype=torch.long)
    for b, (x, y) in enumerate(rows):
        n = len(x)
        ids[b, :n] = torch.tensor(x)
        mask[b, :n] = 1
        if task == "ner":
            tokens[b, :n] = torch.tensor(y)
    batch = {"ids": ids, "types": torch.zeros_like(ids), "mask": mask, "tokens": tokens}
    if task != "ner":
        batch["labels"] = torch.tensor([y for _, y in rows])
    return batch


def main():
    spec = json.load(open(sys.argv[1]))
    task, B, S, rows = spec["task"], spec["batch"], spec["steps"], spec["rows"]
    torch.set_num_threads(spec.get("threads", 2))
    torch.manual_seed(spec["seed"])
    model = hf_training_model(task, spec["config"], spec["num_labels"])
    no_decay = lambda n: n.endswith("bias") or "LayerNorm" in n
    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ], lr=5e-5)
    warm = round(S * 0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (S - s) / max(1, S - warm)))
    order = torch.randperm(len(rows)).tolist()  # RandomSampler
    if len(order) < S * B:
        raise SystemExit(f"{len(rows)} rows are fewer than {S} steps x batch {B}")
    model.train()
    real = computed = 0
    timed_tokens, timed_s = 0, 0.0
    for step in range(S):
        t0 = time.perf_counter()
        picked = [rows[i] for i in order[step * B:(step + 1) * B]]
        batch = collate(picked, task)
        loss, _ = model(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = loss.item()
        dt = time.perf_counter() - t0
        n = int(batch["mask"].sum())
        real += n
        computed += batch["mask"].numel()
        if step > 0:
            timed_tokens += n
            timed_s += dt
    print(json.dumps({
        "bench": "finetune_job", "task": task, "impl": "pytorch", "arch": spec.get("arch"), "batch": B,
        "max_length": spec.get("max_length"), "steps": S, "tokens_per_s": round(timed_tokens / timed_s),
        "padding_fraction": round(1 - real / computed, 3), "ms_per_step": round(timed_s / (S - 1) * 1000, 1),
        "loss": round(loss, 4), "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
