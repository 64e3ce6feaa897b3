"""Writes a PyTorch reference for native_torch_parity_test.ts: the plain-torch HF-style BertForPreTraining of
tests/bench/train_torch.py at a tiny size, dropout off, with its MLM/NSP losses and every gradient, as JSON
keyed by Hugging Face names. Usage: /usr/bin/python3 torch_parity.py OUT.json"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../../tests/bench"))
import train_torch as tt
import torch.nn.functional as F
torch.manual_seed(0)
V, C, L, NH, Fi, P = 99, 32, 2, 4, 37, 16
m = tt.BertForPreTraining(V, C, L, NH, Fi, P=P, p=0.0)
for prm in m.parameters():  # non-trivial LN and biases
    prm.data.add_(torch.randn_like(prm) * 0.05)
m.eval()
B, T = 3, 7
ids = torch.randint(1, V, (B, T)); ids[2, 5:] = 0
types = torch.zeros(B, T, dtype=torch.long); types[:, 4:] = 1
attn = torch.ones(B, T, dtype=torch.long); attn[2, 5:] = 0
labels = torch.full((B, T), -100); labels[0, 2] = 5; labels[1, 3] = 17; labels[2, 1] = 40; labels[0, 6] = 98
nsp = torch.tensor([0, 1, 1])
mlm_logits, nsp_logits = m(ids, types, attn)
mlm = F.cross_entropy(mlm_logits.view(-1, V), labels.view(-1), ignore_index=-100)
nl = F.cross_entropy(nsp_logits, nsp)
(mlm + nl).backward()
names = {"wte.weight": "bert.embeddings.word_embeddings.weight", "wpe.weight": "bert.embeddings.position_embeddings.weight",
  "wtt.weight": "bert.embeddings.token_type_embeddings.weight", "emb_ln.weight": "bert.embeddings.LayerNorm.weight", "emb_ln.bias": "bert.embeddings.LayerNorm.bias",
  "pooler.weight": "bert.pooler.dense.weight", "pooler.bias": "bert.pooler.dense.bias", "transform.weight": "cls.predictions.transform.dense.weight",
  "transform.bias": "cls.predictions.transform.dense.bias", "transform_ln.weight": "cls.predictions.transform.LayerNorm.weight",
  "transform_ln.bias": "cls.predictions.transform.LayerNorm.bias", "decoder_bias": "cls.predictions.bias", "nsp.weight": "cls.seq_relationship.weight", "nsp.bias": "cls.seq_relationship.bias"}
sub = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value", "attn_out": "attention.output.dense",
  "ln1": "attention.output.LayerNorm", "inter": "intermediate.dense", "out": "output.dense", "ln2": "output.LayerNorm"}
out = {}
for n, prm in m.named_parameters():
    if n.startswith("layers."):
        _, l, mod, kind = n.split(".")
        hf = f"bert.encoder.layer.{l}.{sub[mod]}.{kind}"
    else:
        hf = names[n]
    out[hf] = {"shape": list(prm.shape), "data": prm.detach().numpy().ravel().tolist(), "grad": prm.grad.numpy().ravel().tolist()}
# one AdamW step as the engine takes it: BERT's decay groups, clipping at 1.0, torch.optim.AdamW
no_decay = lambda n: "bias" in n or "ln" in n
groups = [
    {"params": [q for n, q in m.named_parameters() if not no_decay(n)], "weight_decay": 0.01},
    {"params": [q for n, q in m.named_parameters() if no_decay(n)], "weight_decay": 0.0},
]
opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
opt.step()
for n, prm in m.named_parameters():
    if n.startswith("layers."):
        _, l, mod, kind = n.split(".")
        hf = f"bert.encoder.layer.{l}.{sub[mod]}.{kind}"
    else:
        hf = names[n]
    out[hf]["after"] = prm.detach().numpy().ravel().tolist()
json.dump({"weights": out, "ids": ids.ravel().tolist(), "types": types.ravel().tolist(), "attn": attn.ravel().tolist(),
  "labels": labels.ravel().tolist(), "nsp": nsp.tolist(), "mlm": mlm.item(), "nspLoss": nl.item(),
  "nspLogits": nsp_logits.detach().numpy().ravel().tolist()}, open(sys.argv[1], "w"))
print("mlm", mlm.item(), "nsp", nl.item())
