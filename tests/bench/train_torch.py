#!/usr/bin/python3
"""PyTorch reference for `deno task bench train`: an HF-style BERT (BertForPreTraining written in plain torch,
since transformers is not installable here) with the same heads, AdamW, schedule and clipping as bertforge.

Like HF, the MLM decoder runs over every position (B, T, V) and the loss ignores label -100; that is the
difference the native engine exploits by computing logits only at masked positions.

Prints one JSON line per mode:
  {"bench":"train_step","impl":"pytorch","backend":"torch",...}   (--mode train)
  {"bench":"forward","impl":"pytorch",...}                         (--mode forward, torch.no_grad)
Threads: torch's default (all cores) unless --threads is given.
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "bert-mini": dict(hidden=256, layers=4, heads=4, inter=1024),
    "bert-small": dict(hidden=512, layers=4, heads=8, inter=2048),
    "bert-base": dict(hidden=768, layers=12, heads=12, inter=3072),
}


class Layer(nn.Module):
    def __init__(self, C, NH, Fi, p):
        super().__init__()
        self.NH, self.HS = NH, C // NH
        self.query, self.key, self.value = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)
        self.attn_out, self.ln1 = nn.Linear(C, C), nn.LayerNorm(C, eps=1e-12)
        self.inter, self.out, self.ln2 = nn.Linear(C, Fi), nn.Linear(Fi, C), nn.LayerNorm(C, eps=1e-12)
        self.drop = nn.Dropout(p)

    def forward(self, x, mask):  # x (B, T, C), mask (B, 1, 1, T) additive
        B, T, C = x.shape
        heads = lambda t: t.view(B, T, self.NH, self.HS).transpose(1, 2)  # (B, NH, T, HS)
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        att = q @ k.transpose(-1, -2) / math.sqrt(self.HS) + mask
        att = self.drop(att.softmax(-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = self.ln1(x + self.drop(self.attn_out(y)))
        return self.ln2(x + self.drop(self.out(F.gelu(self.inter(x)))))


class BertForPreTraining(nn.Module):
    def __init__(self, V, C, L, NH, Fi, P=512, p=0.1):
        super().__init__()
        self.wte, self.wpe, self.wtt = nn.Embedding(V, C, padding_idx=0), nn.Embedding(P, C), nn.Embedding(2, C)
        self.emb_ln, self.drop = nn.LayerNorm(C, eps=1e-12), nn.Dropout(p)
        self.layers = nn.ModuleList([Layer(C, NH, Fi, p) for _ in range(L)])
        self.pooler = nn.Linear(C, C)
        self.transform, self.transform_ln = nn.Linear(C, C), nn.LayerNorm(C, eps=1e-12)
        self.decoder_bias = nn.Parameter(torch.zeros(V))
        self.nsp = nn.Linear(C, 2)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.data.normal_(0.0, 0.02)
            if isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def encode(self, ids, types, attn):
        B, T = ids.shape
        pos = torch.arange(T).unsqueeze(0)
        x = self.drop(self.emb_ln(self.wte(ids) + self.wpe(pos) + self.wtt(types)))
        mask = (1.0 - attn[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, mask)
        return x, torch.tanh(self.pooler(x[:, 0]))

    def forward(self, ids, types, attn):
        x, pooled = self.encode(ids, types, attn)
        h = self.transform_ln(F.gelu(self.transform(x)))
        return h @ self.wte.weight.t() + self.decoder_bias, self.nsp(pooled)  # (B, T, V) like HF


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="bert-mini")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=21128)
    ap.add_argument("--mode", choices=["train", "forward"], default="train")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = PRESETS[a.arch]
    B, T, V = a.batch, a.seq_len, a.vocab
    model = BertForPreTraining(V, cfg["hidden"], cfg["layers"], cfg["heads"], cfg["inter"])
    ids = torch.randint(1, V, (B, T))
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, T // 2 :] = 1
    attn = torch.ones(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    masked = torch.rand(B, T) < 0.15
    labels[masked] = ids[masked]
    nsp = torch.randint(0, 2, (B,))

    if a.mode == "forward":
        model.eval()
        with torch.no_grad():
            for _ in range(a.warmup):
                model.encode(ids, types, attn)
            times = []
            for _ in range(a.steps):
                t0 = time.perf_counter()
                model.encode(ids, types, attn)
                times.append(time.perf_counter() - t0)
            dt = statistics.median(times)
        print(json.dumps({"bench": "forward", "impl": "pytorch", "arch": a.arch, "seq_len": T, "batch": B,
                          "ms_per_batch": round(dt * 1000, 2), "tokens_per_s": round(B * T / dt, 1),
                          "threads": torch.get_num_threads()}))
        return

    no_decay = lambda n: "bias" in n or "ln" in n
    groups = [
        {"params": [p for n, p in model.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.999), eps=1e-6)
    total = a.warmup + a.steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (total - s) / total))
    model.train()

    def step():
        mlm_logits, nsp_logits = model(ids, types, attn)
        loss = F.cross_entropy(mlm_logits.view(-1, V), labels.view(-1), ignore_index=-100) + F.cross_entropy(nsp_logits, nsp)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)  # median, like the Deno side: robust to a preempted step on a shared machine
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"bench": "train_step", "impl": "pytorch", "backend": "torch", "arch": a.arch, "seq_len": T,
                      "batch": B, "ms_per_step": round(dt * 1000, 1), "tokens_per_s": round(B * T / dt, 1),
                      "peak_rss_mb": round(rss_mb), "loss": round(loss, 4), "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
