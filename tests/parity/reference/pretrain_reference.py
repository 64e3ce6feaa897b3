#!/usr/bin/python3
"""Independent check that bertforge's pretraining learns as PyTorch does: a standard post-LN BERT-mini
(nn.TransformerEncoder, GELU, dropout 0.1, tied MLM decoder, NSP pooler) trained in plain torch on a bertforge
shard file (format v2, read here byte by byte), AdamW with linear warmup and decay as the trainer uses, held-out
MLM accuracy on the last 256 instances every 50 steps.

  /usr/bin/python3 tests/parity/reference/pretrain_reference.py SHARD.bin VOCAB.txt STEPS TOTAL_STEPS LR WARMUP

2026-11-25, shards of tests/bench/trainer_quality.ts (wwm, seq 128), batch 32, lr 1e-3, 60 warmup of 600:
held-out MLM accuracy 5.4% / 6.7% / 8.9% / 11.5% / 12.6% at steps 50 / 100 / 150 / 200 / 250; the native engine
on the same shards and schedule: 5.4% at 100, 10.9% at 200, 13.5% at 300.
"""
import math, struct, sys, time, numpy as np, torch
from torch import nn
torch.manual_seed(0)
torch.set_num_threads(2)
path, vocab_path = sys.argv[1], sys.argv[2]
STEPS, TOTAL, LR, WARM = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
V = len(open(vocab_path).read().strip().split("\n"))
data = open(path, "rb").read()
count, index_at = struct.unpack_from("<II", data, len(data) - 16)
idb = struct.unpack_from("<I", data, 12)[0]
def get(i):
    at = struct.unpack_from("<I", data, index_at + 4 * i)[0]
    L, segA, flags, _, M = struct.unpack_from("<HHBBH", data, at)
    p = at + 8
    dt = "<u2" if idb == 2 else "<u4"
    ids = np.frombuffer(data, dt, L, p); p += L * idb
    pos = np.frombuffer(data, "<u2", M, p); p += 2 * M
    lab = np.frombuffer(data, dt, M, p)
    return ids, segA, flags & 1, pos, lab
T, B = 128, 32
def batch(idx):
    ids = torch.zeros(len(idx), T, dtype=torch.long); tt = torch.zeros_like(ids); am = torch.zeros_like(ids)
    mlm = torch.full_like(ids, -100); nsp = torch.zeros(len(idx), dtype=torch.long)
    for b, i in enumerate(idx):
        x, segA, rn, pos, lab = get(i)
        L = len(x); ids[b, :L] = torch.from_numpy(x.astype(np.int64)); am[b, :L] = 1; tt[b, segA:L] = 1
        mlm[b, torch.from_numpy(pos.astype(np.int64))] = torch.from_numpy(lab.astype(np.int64)); nsp[b] = rn
    return ids, tt, am, mlm, nsp
C = 256
class M(nn.Module):
    def __init__(s):
        super().__init__()
        s.we, s.pe, s.te = nn.Embedding(V, C), nn.Embedding(512, C), nn.Embedding(2, C)
        s.ln, s.drop = nn.LayerNorm(C, eps=1e-12), nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(C, 4, 1024, 0.1, activation="gelu", batch_first=True, norm_first=False, layer_norm_eps=1e-12)
        s.enc = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        s.tdense, s.tln = nn.Linear(C, C), nn.LayerNorm(C, eps=1e-12)
        s.dbias = nn.Parameter(torch.zeros(V)); s.pool = nn.Linear(C, C); s.nsp = nn.Linear(C, 2)
        for m in s.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)): nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None: nn.init.zeros_(m.bias)
    def forward(s, ids, tt, am, mlm):
        x = s.drop(s.ln(s.we(ids) + s.pe(torch.arange(ids.shape[1])) + s.te(tt)))
        h = s.enc(x, src_key_padding_mask=(am == 0))
        sel = mlm != -100
        z = s.tln(nn.functional.gelu(s.tdense(h[sel])))
        logits = z @ s.we.weight.T + s.dbias
        nl = s.nsp(torch.tanh(s.pool(h[:, 0])))
        return logits, mlm[sel], nl
m = M()
decay = [p for n, p in m.named_parameters() if p.dim() > 1]
nodecay = [p for n, p in m.named_parameters() if p.dim() <= 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": nodecay, "weight_decay": 0}], lr=LR, eps=1e-6)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / WARM if s < WARM else max(0, (TOTAL - s) / (TOTAL - WARM)))
rng = np.random.default_rng(1)
ev = list(range(count - 256, count)); train = rng.permutation(count - 256)
def evaluate():
    m.eval(); c = n = 0
    with torch.no_grad():
        for k in range(0, 256, 32):
            ids, tt, am, mlm, nsp = batch(ev[k:k + 32]); lg, lab, _ = m(ids, tt, am, mlm)
            c += (lg.argmax(-1) == lab).sum().item(); n += len(lab)
    m.train(); return c / n
t0 = time.time()
for step in range(1, STEPS + 1):
    ids, tt, am, mlm, nsp = batch(train[(step - 1) * B: step * B])
    lg, lab, nl = m(ids, tt, am, mlm)
    loss = nn.functional.cross_entropy(lg, lab) + nn.functional.cross_entropy(nl, nsp)
    opt.zero_grad(); loss.backward(); nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sched.step()
    if step % 50 == 0: print(step, round(loss.item(), 3), "eval_mlm", round(evaluate(), 4), f"{time.time()-t0:.0f}s", flush=True)
