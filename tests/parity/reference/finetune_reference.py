#!/usr/bin/python3
"""Independent check of what pretraining adds to sentiment fine-tuning: the HF-named torch BERT of
make_fixtures.py, loaded from a bertforge-pretrained model folder (strict names) or left at its random init,
fine-tuned on features that export_features.ts writes (the trainer's own tokenization and 90/10 split), with
BERT's dropout and AdamW/warmup/decay; eval and held-out test accuracy per epoch.

  deno run -A tests/parity/reference/export_features.ts STORE_DIR feats.json
  /usr/bin/python3 tests/parity/reference/finetune_reference.py feats.json MODEL_DIR pretrained|random LR EPOCHS
"""
import json, os, sys, random, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from make_fixtures import BertForSequenceClassification, read_safetensors
torch.set_num_threads(2)
feats = json.load(open(sys.argv[1])); model_dir = sys.argv[2]; init = sys.argv[3]
LR, EPOCHS, B = float(sys.argv[4]), int(sys.argv[5]), 16
c = json.load(open(model_dir + "/config.json"))
torch.manual_seed(42); random.seed(42)
m = BertForSequenceClassification(c, 2, False)
for mod in m.modules():
    if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)): torch.nn.init.normal_(mod.weight, std=0.02)
    if isinstance(mod, torch.nn.Linear): torch.nn.init.zeros_(mod.bias)
if init == "pretrained":
    w = read_safetensors(model_dir + "/model.safetensors")
    missing, unexpected = m.load_state_dict({k: v for k, v in w.items() if k.startswith("bert.")}, strict=False)
    print("missing", missing)
# dropout 0.1 after embeddings / attention / hidden as BERT: wrap by forward hooks on LayerNorm outputs
drop = torch.nn.Dropout(0.1)
for name, mod in m.named_modules():
    if name.endswith("output.dense") or name == "bert.embeddings.LayerNorm":
        mod.register_forward_hook(lambda mod, i, o: drop(o))
def batch(rows):
    T = max(len(r[0]) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long); mask = torch.zeros_like(ids)
    for b, (x, _) in enumerate(rows): ids[b, :len(x)] = torch.tensor(x); mask[b, :len(x)] = 1
    return {"ids": ids, "types": torch.zeros_like(ids), "mask": mask, "labels": torch.tensor([r[1] for r in rows])}
train = feats["train"]; steps = (len(train) // B) * EPOCHS; warm = steps // 10
decay = [p for n, p in m.named_parameters() if p.dim() > 1]; nod = [p for n, p in m.named_parameters() if p.dim() <= 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": nod, "weight_decay": 0}], lr=LR, eps=1e-6)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else max(0, (steps - s) / (steps - warm)))
def acc(rows):
    m.eval(); c = 0
    with torch.no_grad():
        for k in range(0, len(rows), 64):
            bt = batch(rows[k:k + 64]); _, o = m(bt); c += (o["logits"].argmax(-1) == bt["labels"]).sum().item()
    m.train(); return c / len(rows)
best = (-1, 0)
for ep in range(EPOCHS):
    order = list(range(len(train))); random.shuffle(order)
    for k in range(0, len(order) - B + 1, B):
        loss, _ = m(batch([train[i] for i in order[k:k + B]]))
        opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); opt.step(); sched.step()
    e, t = acc(feats["eval"]), acc(feats["test"])
    print(init, "epoch", ep + 1, "eval", round(e, 4), "test", round(t, 4), flush=True)
    if e > best[0]: best = (e, t)
print(json.dumps({"init": init, "lr": LR, "best_eval": best[0], "test_at_best": best[1]}))
