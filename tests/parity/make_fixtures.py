#!/usr/bin/python3
"""Parity fixtures for bertforge's engines, from an independent PyTorch implementation.

Run with Debian's PyTorch:  /usr/bin/python3 tests/parity/make_fixtures.py
(HF transformers is not installable here, so BERT is written below in plain torch, module for module as
transformers' modeling_bert.py, so that state_dict() yields exactly the HF tensor names.)

For each head it writes tests/parity/fixtures/<case>/:
  config.json, model.safetensors, vocab.txt   the initial checkpoint in the HF layout (loadModelDir reads it)
  inputs.json                                 the batch (B=3, T=7, padding in rows 1 and 2)
  expected.json                               eval-mode logits / NSP logits / Viterbi paths, loss of the batch,
                                              the optimizer settings, the learning rates used
  grads.safetensors                           d(loss)/d(every tensor) at the initial weights
  after.safetensors                           weights after STEPS AdamW steps (warmup, decay, clipping)
pretrain_preln/ is the pretrain case with config `bertforge_layer_norm: "pre"`: every layer
x = x + Attn(LN1(x)); x = x + FFN(LN2(x)), then the final `bert.encoder.LayerNorm` (nn.TransformerEncoderLayer
with norm_first=True, plus the final norm of Cramming / GPT-2). HF transformers has no such BERT.
qa/ is BertForQuestionAnswering (start/end positions in inputs.json; `--only-qa` writes it alone).
plus accum/ (two micro-batches accumulated into one step) and hf_names_bert_base_chinese.json: the state_dict
names and shapes of HF-layout models with the bert-base-chinese config (what our checkpoint.ts must produce).

`--check-saved DIR` instead loads a model folder written by bertforge (saveModelDir) into the matching torch
model with load_state_dict(strict=True) and runs it: proof that what we export loads in PyTorch/transformers.

Letters: B batch, T sequence length, C hidden, NH heads, HS head size, F intermediate, V vocab, K labels.
Dropout is 0 in every fixture: dropout masks cannot match across frameworks.
"""
import json
import math
import os
import struct
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")

# Odd sizes (google-research/bert's modeling_test.py style) so a swapped dimension fails loudly.
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            max_position_embeddings=16, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12,
            pad_token_id=0, model_type="bert")
B, T = 3, 7
STEPS = 3
OPTIMIZER = dict(lr=1e-3, weightDecay=0.01, beta1=0.9, beta2=0.999, eps=1e-6, warmupSteps=2, totalSteps=5,
                 maxGradNorm=1.0, gradAccumSteps=1)


# ---------------------------------------------------------------- safetensors (the format, by hand)

def write_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").copy()).reshape(info["shape"])
    return out


# ---------------------------------------------------------------- BERT, module for module as modeling_bert.py

def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


class BertEmbeddings(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.word_embeddings = nn.Embedding(c["vocab_size"], c["hidden_size"], padding_idx=c["pad_token_id"])
        s.position_embeddings = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        s.token_type_embeddings = nn.Embedding(c["type_vocab_size"], c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(s, ids, types):
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        return s.LayerNorm(s.word_embeddings(ids) + s.position_embeddings(pos) + s.token_type_embeddings(types))


class BertSelfAttention(nn.Module):
    def __init__(s, c):
        super().__init__()
        C = c["hidden_size"]
        s.NH, s.HS = c["num_attention_heads"], C // c["num_attention_heads"]
        s.query, s.key, s.value = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)

    def forward(s, x, mask_add):
        Bx, Tx, C = x.shape
        split = lambda t: t.view(Bx, Tx, s.NH, s.HS).permute(0, 2, 1, 3)  # (B, NH, T, HS)
        q, k, v = split(s.query(x)), split(s.key(x)), split(s.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(s.HS) + mask_add  # (B, NH, T, T)
        probs = scores.softmax(-1)
        return (probs @ v).permute(0, 2, 1, 3).reshape(Bx, Tx, C)


class BertSelfOutput(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(s, h, x):
        return s.LayerNorm(s.dense(h) + x)


class BertAttention(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.self = BertSelfAttention(c)
        s.output = BertSelfOutput(c)

    def forward(s, x, mask_add):
        return s.output(s.self(x, mask_add), x)


class BertIntermediate(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(s, x):
        return gelu(s.dense(x))


class BertOutput(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["intermediate_size"], c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(s, h, x):
        return s.LayerNorm(s.dense(h) + x)


def pre_ln(c):
    return c.get("bertforge_layer_norm", "post") == "pre"


class BertLayer(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.attention = BertAttention(c)
        s.intermediate = BertIntermediate(c)
        s.output = BertOutput(c)
        s.pre_ln = pre_ln(c)

    def forward(s, x, mask_add):
        if s.pre_ln:
            # the post-LN modules' LayerNorms, applied to each branch's input instead of after the residual sum
            ln1, ln2 = s.attention.output.LayerNorm, s.output.LayerNorm
            x = x + s.attention.output.dense(s.attention.self(ln1(x), mask_add))
            return x + s.output.dense(s.intermediate(ln2(x)))
        h = s.attention(x, mask_add)
        return s.output(s.intermediate(h), h)


class BertEncoder(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.layer = nn.ModuleList([BertLayer(c) for _ in range(c["num_hidden_layers"])])
        if pre_ln(c):
            s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])  # bert.encoder.LayerNorm

    def forward(s, x, mask_add):
        for layer in s.layer:
            x = layer(x, mask_add)
        return s.LayerNorm(x) if hasattr(s, "LayerNorm") else x


class BertPooler(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["hidden_size"])

    def forward(s, x):
        return torch.tanh(s.dense(x[:, 0]))


class BertModel(nn.Module):
    def __init__(s, c, pooler=True):
        super().__init__()
        s.embeddings = BertEmbeddings(c)
        s.encoder = BertEncoder(c)
        s.pooler = BertPooler(c) if pooler else None

    def forward(s, ids, types, mask):
        mask_add = (1.0 - mask[:, None, None, :].float()) * -10000.0  # (B, 1, 1, T), BERT's additive mask
        h = s.encoder(s.embeddings(ids, types), mask_add)
        return h, (s.pooler(h) if s.pooler is not None else None)


class BertPredictionHeadTransform(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.dense = nn.Linear(c["hidden_size"], c["hidden_size"])
        s.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(s, x):
        return s.LayerNorm(gelu(s.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.transform = BertPredictionHeadTransform(c)
        s.decoder = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        s.bias = nn.Parameter(torch.zeros(c["vocab_size"]))
        s.decoder.bias = s.bias  # tied, as HF does

    def forward(s, x):
        return s.decoder(s.transform(x))


class BertPreTrainingHeads(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.predictions = BertLMPredictionHead(c)
        s.seq_relationship = nn.Linear(c["hidden_size"], 2)


class BertForPreTraining(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.bert = BertModel(c)
        s.cls = BertPreTrainingHeads(c)
        s.cls.predictions.decoder.weight = s.bert.embeddings.word_embeddings.weight  # tied

    def forward(s, batch):
        h, pooled = s.bert(batch["ids"], batch["types"], batch["mask"])
        mlm = s.cls.predictions(h)  # (B, T, V)
        nsp = s.cls.seq_relationship(pooled)  # (B, 2)
        ce = nn.CrossEntropyLoss(ignore_index=-100)
        loss = ce(mlm.reshape(-1, mlm.shape[-1]), batch["mlm"].reshape(-1)) + ce(nsp, batch["nsp"])
        return loss, {"logits": mlm, "nspLogits": nsp}


class BertForSequenceClassification(nn.Module):
    """HF's class; with pooling="mean" (bertforge's `--pooling mean`) there is no pooler and the classifier reads
    the mean of the last layer over each row's attended positions."""

    def __init__(s, c, K, multilabel, pooling=None):
        super().__init__()
        s.bert = BertModel(c, pooler=pooling != "mean")
        s.classifier = nn.Linear(c["hidden_size"], K)
        s.multilabel = multilabel
        s.pooling = pooling

    def forward(s, batch):
        h, pooled = s.bert(batch["ids"], batch["types"], batch["mask"])
        if s.pooling == "mean":
            real = batch["mask"].unsqueeze(-1).float()  # (B, T, 1)
            pooled = (h * real).sum(1) / real.sum(1)
        logits = s.classifier(pooled)  # (B, K)
        if s.multilabel:
            loss = nn.BCEWithLogitsLoss()(logits, batch["multi"])
        else:
            loss = nn.CrossEntropyLoss()(logits, batch["labels"])
        return loss, {"logits": logits}


class CRF(nn.Module):
    """pytorch-crf's parameters. The chain runs over a sequence's attended positions; positions labelled -100 are
    latent, so loss = logZ(all paths) - logZ(paths agreeing with the labels). Written per sequence on its own
    positions, independent of the masked, batched versions in the engines."""

    def __init__(s, K):
        super().__init__()
        s.start_transitions = nn.Parameter(torch.empty(K).uniform_(-0.5, 0.5))
        s.end_transitions = nn.Parameter(torch.empty(K).uniform_(-0.5, 0.5))
        s.transitions = nn.Parameter(torch.empty(K, K).uniform_(-0.5, 0.5))

    def log_partition(s, emissions):  # emissions (n, K)
        alpha = s.start_transitions + emissions[0]
        for i in range(1, emissions.shape[0]):
            alpha = torch.logsumexp(alpha[:, None] + s.transitions, 0) + emissions[i]
        return torch.logsumexp(alpha + s.end_transitions, 0)

    def nll(s, emissions, labels):  # emissions (n, K), labels (n) with -100 = latent
        allowed = torch.ones_like(emissions, dtype=torch.bool)
        for i, tag in enumerate(labels.tolist()):
            if tag != -100:
                allowed[i] = False
                allowed[i, tag] = True
        agreeing = emissions.masked_fill(~allowed, float("-inf"))
        return s.log_partition(emissions) - s.log_partition(agreeing)

    def viterbi(s, emissions):
        score, back = s.start_transitions + emissions[0], []
        for i in range(1, emissions.shape[0]):
            best, arg = (score[:, None] + s.transitions).max(0)
            score = best + emissions[i]
            back.append(arg)
        tag = int((score + s.end_transitions).argmax())
        path = [tag]
        for arg in reversed(back):
            tag = int(arg[tag])
            path.append(tag)
        return path[::-1]


class BertForTokenClassification(nn.Module):
    def __init__(s, c, K, crf):
        super().__init__()
        s.bert = BertModel(c, pooler=False)  # HF builds token classification without a pooler
        s.classifier = nn.Linear(c["hidden_size"], K)
        if crf:
            s.crf = CRF(K)

    def forward(s, batch):
        h, _ = s.bert(batch["ids"], batch["types"], batch["mask"])
        logits = s.classifier(h)  # (B, T, K)
        labels = batch["tokens"]
        if not hasattr(s, "crf"):
            loss = nn.CrossEntropyLoss(ignore_index=-100)(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
            return loss, {"logits": logits}
        losses, paths = [], torch.full(labels.shape, -1, dtype=torch.long)
        for b in range(labels.shape[0]):
            n = int(batch["mask"][b].sum())  # padding is on the right
            losses.append(s.crf.nll(logits[b, :n], labels[b, :n]))
            with torch.no_grad():
                paths[b, :n] = torch.tensor(s.crf.viterbi(logits[b, :n]))
        return torch.stack(losses).mean(), {"logits": logits, "paths": paths}


class BertForQuestionAnswering(nn.Module):
    """HF's class: no pooler, qa_outputs (2, C) on the last layer with no dropout, loss the mean of the start and
    end cross-entropies over each row's T positions (padding included); out-of-row positions clamp to T and are
    ignored, as HF does."""

    def __init__(s, c):
        super().__init__()
        s.bert = BertModel(c, pooler=False)
        s.qa_outputs = nn.Linear(c["hidden_size"], 2)

    def forward(s, batch):
        h, _ = s.bert(batch["ids"], batch["types"], batch["mask"])
        logits = s.qa_outputs(h)  # (B, T, 2)
        start, end = (t.squeeze(-1) for t in logits.split(1, dim=-1))  # (B, T) each
        ignored = start.shape[1]
        ce = nn.CrossEntropyLoss(ignore_index=ignored)
        loss = (ce(start, batch["start"].clamp(0, ignored)) + ce(end, batch["end"].clamp(0, ignored))) / 2
        return loss, {"logits": logits}


# ---------------------------------------------------------------- fixtures

def randomize(model, gen):
    """Random weights larger than BERT's init (std 0.2, LayerNorm around 1) so every path carries signal."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.startswith("crf."):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def hf_state(model):
    """state_dict as HF's save_pretrained writes it to safetensors: tied decoder tensors left out."""
    return {k: v for k, v in model.state_dict().items() if k not in ("cls.predictions.decoder.weight",
                                                                       "cls.predictions.decoder.bias")}


def make_inputs(gen, task, K):
    lengths = [7, 5, 3]  # rows 1 and 2 are padded
    ids = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(5, TINY["vocab_size"], (n,), generator=gen)
        ids[b, 0], ids[b, n - 1] = 2, 3  # [CLS] ... [SEP]
        mask[b, :n] = 1
        types[b, n // 2:n] = 1  # a sentence pair
    batch = {"ids": ids, "types": types, "mask": mask}
    if task == "pretrain":
        mlm = torch.full((B, T), -100, dtype=torch.long)
        for b, positions in enumerate([[1, 3, 4], [2], [1]]):
            for p in positions:
                mlm[b, p] = int(ids[b, p])
                ids[b, p] = 4  # [MASK]
        batch["mlm"], batch["nsp"] = mlm, torch.tensor([0, 1, 1])
    elif task in ("classify", "pair"):
        batch["labels"] = torch.randint(0, K, (B,), generator=gen)
    elif task == "multilabel":
        batch["multi"] = torch.randint(0, 2, (B, K), generator=gen).float()
    elif task == "ner":
        tokens = torch.randint(0, K, (B, T), generator=gen)
        tokens[mask == 0] = -100
        for b, n in enumerate(lengths):
            tokens[b, 0] = tokens[b, n - 1] = -100  # [CLS], [SEP]
        tokens[0, 3] = -100  # a continuation word piece inside the sentence
        batch["tokens"] = tokens
    elif task == "qa":
        # a span in the second segment, a one-token answer, and [CLS] for a window without the answer
        batch["start"], batch["end"] = torch.tensor([4, 3, 0]), torch.tensor([5, 3, 0])
    return batch


def batch_json(batch, K):
    out = {"B": B, "T": T, "inputIds": batch["ids"].flatten().tolist(),
           "tokenTypeIds": batch["types"].flatten().tolist(), "attentionMask": batch["mask"].flatten().tolist()}
    if "mlm" in batch:
        out["mlmLabels"], out["nspLabels"] = batch["mlm"].flatten().tolist(), batch["nsp"].tolist()
    if "labels" in batch:
        out["labels"] = batch["labels"].tolist()
    if "multi" in batch:
        out["multiLabels"] = batch["multi"].flatten().tolist()
    if "tokens" in batch:
        out["tokenLabels"] = batch["tokens"].flatten().tolist()
    if "start" in batch:
        out["startPositions"], out["endPositions"] = batch["start"].tolist(), batch["end"].tolist()
    return out


def build(config, head):
    task, K = head["task"], head.get("numLabels", 0)
    if task == "pretrain":
        return BertForPreTraining(config)
    if task == "ner":
        return BertForTokenClassification(config, K, head.get("crf", False))
    if task == "qa":
        return BertForQuestionAnswering(config)
    return BertForSequenceClassification(config, K, task == "multilabel", head.get("pooling"))


def architecture(task):
    return {"pretrain": "BertForPreTraining", "ner": "BertForTokenClassification",
            "qa": "BertForQuestionAnswering"}.get(
        task, "BertForSequenceClassification")


def optimizer_for(model, opt):
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    adamw = torch.optim.AdamW([{"params": decay, "weight_decay": opt["weightDecay"]},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), eps=opt["eps"])
    warmup, total = opt["warmupSteps"], opt["totalSteps"]
    # transformers.get_linear_schedule_with_warmup
    schedule = torch.optim.lr_scheduler.LambdaLR(adamw, lambda s: s / max(1, warmup) if s < warmup else max(
        0.0, (total - s) / max(1, total - warmup)))
    return adamw, schedule


def write_case(name, head, seed, arch=None):
    gen = torch.Generator().manual_seed(seed)
    tiny = dict(TINY, **(arch or {}))
    config = dict(tiny, architectures=[architecture(head["task"])], bertforge_task=head["task"])
    K = head.get("numLabels", 0)
    if head["task"] not in ("pretrain", "qa"):  # qa predicts positions: no labels
        config["id2label"] = {str(i): f"L{i}" for i in range(K)}
        config["label2id"] = {f"L{i}": i for i in range(K)}
    if head.get("crf"):
        config["bertforge_crf"] = True
    if head.get("pooling"):
        config["bertforge_pooling"] = head["pooling"]
    if head["task"] == "multilabel":
        config["problem_type"] = "multi_label_classification"
    model = build(tiny, head)
    randomize(model, gen)
    batch = make_inputs(gen, head["task"], K)
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(5, 99)]) + "\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), hf_state(model), {"format": "pt"})

    model.train()  # dropout is 0, so train and eval agree; gradients need train mode only for form
    loss, outputs = model(batch)
    model.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    grad_norm = float(torch.sqrt(sum((g ** 2).sum() for g in grads.values())))
    write_safetensors(os.path.join(folder, "grads.safetensors"), grads)

    expected = {"head": head, "loss": float(loss), "gradNorm": grad_norm, "optimizer": OPTIMIZER, "steps": STEPS,
                "logits": outputs["logits"].detach().flatten().tolist()}
    if "nspLogits" in outputs:
        expected["nspLogits"] = outputs["nspLogits"].detach().flatten().tolist()
    if "paths" in outputs:
        expected["paths"] = outputs["paths"].flatten().tolist()

    adamw, schedule = optimizer_for(model, OPTIMIZER)
    lrs, losses = [], []
    for _ in range(STEPS):
        adamw.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        losses.append(float(loss))
        torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER["maxGradNorm"])
        lrs.append(adamw.param_groups[0]["lr"])
        adamw.step()
        schedule.step()
    expected["learningRates"], expected["stepLosses"] = lrs, losses
    write_safetensors(os.path.join(folder, "after.safetensors"), hf_state(model))
    with open(os.path.join(folder, "inputs.json"), "w") as f:
        json.dump(batch_json(batch, K), f)
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"{name}: loss {expected['loss']:.6f} grad norm {grad_norm:.3f} (clipped to {OPTIMIZER['maxGradNorm']})")


def write_accumulation_case(seed):
    """Two micro-batches (rows 0-1, then row 2) accumulated into one AdamW step, HF Trainer style: each
    micro-batch loss divided by the number of micro-batches."""
    head = {"task": "classify", "numLabels": 3}
    gen = torch.Generator().manual_seed(seed)
    model = build(TINY, head)
    randomize(model, gen)
    batch = make_inputs(gen, "classify", 3)
    folder = os.path.join(OUT, "accum")
    os.makedirs(folder, exist_ok=True)
    config = dict(TINY, architectures=["BertForSequenceClassification"], bertforge_task="classify",
                  id2label={"0": "a", "1": "b", "2": "c"}, label2id={"a": 0, "b": 1, "c": 2})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(f"w{i}" for i in range(99)) + "\n")
    write_safetensors(os.path.join(folder, "model.safetensors"), hf_state(model), {"format": "pt"})
    opt = dict(OPTIMIZER, warmupSteps=0, gradAccumSteps=2)
    adamw, _ = optimizer_for(model, opt)
    micro = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    adamw.zero_grad()
    for m in micro:
        loss, _ = model(m)
        (loss / 2).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), opt["maxGradNorm"])
    adamw.step()
    write_safetensors(os.path.join(folder, "after.safetensors"), hf_state(model))
    with open(os.path.join(folder, "inputs.json"), "w") as f:
        json.dump([dict(batch_json(m, 3), B=m["ids"].shape[0]) for m in micro], f)
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump({"head": head, "optimizer": opt, "steps": 1}, f)
    print("accum: written")


def write_hf_names():
    """HF state_dict names and shapes with the bert-base-chinese config, per head (tied decoder left out)."""
    path = os.path.join(HERE, "..", "..", "..", "shared", "data", "bert-base-chinese", "config.json")
    path = os.environ.get("BERT_BASE_CHINESE_CONFIG", path)
    with open(path) as f:
        config = dict(TINY, **json.load(f))
    out = {}
    for name, head in [("pretrain", {"task": "pretrain"}), ("classify", {"task": "classify", "numLabels": 2}),
                       ("ner", {"task": "ner", "numLabels": 7, "crf": True})]:
        with torch.device("meta") if hasattr(torch, "device") and hasattr(torch.device, "__enter__") else _null():
            model = build(config, head)
        out[name] = {"head": head, "tensors": {k: list(v.shape) for k, v in hf_state(model).items()}}
    with open(os.path.join(OUT, "hf_names_bert_base_chinese.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("hf_names_bert_base_chinese.json: written")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def check_saved(folder):
    """Loads a bertforge-saved model folder into the torch model with strict=True and runs it once."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    head = {"pretrain": {"task": "pretrain"}, "qa": {"task": "qa"}}.get(config.get("bertforge_task"), None)
    if head is None:
        task = config.get("bertforge_task", "classify")
        head = {"task": task, "numLabels": len(config.get("id2label", {})), "crf": bool(config.get("bertforge_crf")),
                "pooling": config.get("bertforge_pooling")}
    model = build(dict(TINY, **config), head)
    state = read_safetensors(os.path.join(folder, "model.safetensors"))
    if head["task"] == "pretrain":
        state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
        state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    missing, unexpected = model.load_state_dict(state, strict=True)
    ids = torch.tensor([[2, 10, 11, 3]])
    with torch.no_grad():
        h, _ = model.bert(ids, torch.zeros_like(ids), torch.ones_like(ids))
    print(json.dumps({"loaded": folder, "tensors": len(state), "head": head, "hidden_mean": float(h.mean())}))


if __name__ == "__main__":
    torch.manual_seed(0)
    if len(sys.argv) == 3 and sys.argv[1] == "--check-saved":
        check_saved(sys.argv[2])
        sys.exit(0)
    os.makedirs(OUT, exist_ok=True)
    if len(sys.argv) == 3 and sys.argv[1] == "--only-preln":  # adds the pre-LN case without rewriting the others
        write_case(sys.argv[2], {"task": "pretrain"}, 8, {"bertforge_layer_norm": "pre"})
        sys.exit(0)
    if len(sys.argv) == 2 and sys.argv[1] == "--only-qa":  # adds the qa case without rewriting the others
        write_case("qa", {"task": "qa"}, 9)
        sys.exit(0)
    write_case("pretrain", {"task": "pretrain"}, 1)
    write_case("classify", {"task": "classify", "numLabels": 3}, 2)
    write_case("multilabel", {"task": "multilabel", "numLabels": 4}, 3)
    write_case("ner", {"task": "ner", "numLabels": 5}, 4)
    write_case("ner_crf", {"task": "ner", "numLabels": 5, "crf": True}, 5)
    write_accumulation_case(6)
    write_hf_names()
    write_case("classify_mean", {"task": "classify", "numLabels": 3, "pooling": "mean"}, 7)
    write_case("pretrain_preln", {"task": "pretrain"}, 8, {"bertforge_layer_norm": "pre"})
    write_case("qa", {"task": "qa"}, 9)
