"""SmolLM2 (LLaMA) in PyTorch with LoRA adapters, for training on CPU or GPU (runs in the
training venv, <models>/.venv-train).

    from lm_torch import load_base, LoraConfig
    model = load_base("models/cache/SmolLM2-135M-Instruct.Q4_1.gguf")
    model.add_lora(LoraConfig(rank=16, alpha=32, first_layer=14))
    nll = model.answer_loss(ids, start)          # mean NLL of ids[start:] given ids[:start]

The weights are read from the same GGUF that onnx/convert_smollm2.py converts (dequantised
with PyPI `gguf`, Q/K rows un-permuted to the rotate-half layout), so the trained adapter
applies to exactly the weights setup.py exports: W' = W + (alpha / rank) * B @ A, in the
PyTorch [out, in] layout.

Training cost is designed around the CPU (see onnx/README.md, "Training"):
- layers below `first_layer` are frozen and run under no_grad (no activations kept);
- logits are computed only at the positions whose next token is scored (the 49k-wide LM
  head at every position would be most of the work and memory).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, asdict

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# The targets of LoRA, by their names in a layer (all of the layer's linear maps).
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: float = 32.0
    first_layer: int = 14  # layers >= first_layer get adapters; the ones below stay frozen
    targets: tuple = TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


class Linear(torch.nn.Module):
    """y = x W^T (+ scale * (x A^T) B^T when an adapter is attached). W is frozen."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.lora_a = None
        self.lora_b = None
        self.scale = 0.0

    def attach(self, rank: int, scale: float, gen: torch.Generator) -> None:
        out_f, in_f = self.weight.shape
        a = torch.randn(rank, in_f, generator=gen) / math.sqrt(in_f)
        self.lora_a = torch.nn.Parameter(a)
        self.lora_b = torch.nn.Parameter(torch.zeros(out_f, rank))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if self.lora_a is not None:
            y = y + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale
        return y

    def merged(self) -> torch.Tensor:
        if self.lora_a is None:
            return self.weight.detach().clone()
        return (self.weight + self.scale * (self.lora_b @ self.lora_a)).detach()


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


class Layer(torch.nn.Module):
    def __init__(self, hp: dict, w: dict):
        super().__init__()
        self.hp = hp
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        self.attn_norm = torch.nn.Parameter(t(w["attn_norm"]), requires_grad=False)
        self.ffn_norm = torch.nn.Parameter(t(w["ffn_norm"]), requires_grad=False)
        self.lin = torch.nn.ModuleDict({name: Linear(t(w[name])) for name in TARGETS})

    def forward(self, x, cos, sin, cache=None, own_mask=None):
        hp = self.hp
        b, n, _ = x.shape
        h, kv, hd = hp["heads"], hp["kv_heads"], hp["head_dim"]
        a = rms_norm(x, self.attn_norm, hp["rms_eps"])
        q = self.lin["q"](a).view(b, n, h, hd).transpose(1, 2)
        k = self.lin["k"](a).view(b, n, kv, hd).transpose(1, 2)
        v = self.lin["v"](a).view(b, n, kv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache.get("k") is not None:  # a one-row cache is shared by every row of the batch
                ck, cv = cache["k"], cache["v"]
                if ck.shape[0] != b:
                    ck, cv = ck.expand(b, -1, -1, -1), cv.expand(b, -1, -1, -1)
                k = torch.cat([ck, k], dim=2)
                v = torch.cat([cv, v], dim=2)
            cache["k"], cache["v"] = k, v
        rep = h // kv
        k2 = k.repeat_interleave(rep, dim=1)
        v2 = v.repeat_interleave(rep, dim=1)
        past = k2.shape[2] - n
        if own_mask is not None:  # every cached slot, and the own slots own_mask allows ([B or 1, n, n])
            seen = torch.ones(own_mask.shape[0], n, past, dtype=torch.bool, device=x.device)
            mask = torch.cat([seen, own_mask], dim=2)[:, None]
            o = F.scaled_dot_product_attention(q, k2, v2, attn_mask=mask)
        elif past == 0:
            o = F.scaled_dot_product_attention(q, k2, v2, is_causal=True)
        else:  # query t sees every cached slot and its own earlier tokens
            mask = torch.ones(n, past + n, dtype=torch.bool, device=x.device).tril(diagonal=past)
            o = F.scaled_dot_product_attention(q, k2, v2, attn_mask=mask)
        x = x + self.lin["o"](o.transpose(1, 2).reshape(b, n, h * hd))
        m = rms_norm(x, self.ffn_norm, hp["rms_eps"])
        return x + self.lin["down"](F.silu(self.lin["gate"](m)) * self.lin["up"](m))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class SmolLM(torch.nn.Module):
    def __init__(self, hp: dict, weights: dict):
        super().__init__()
        self.hp = hp
        self.embed = torch.nn.Parameter(torch.from_numpy(weights["embed"]), requires_grad=False)
        self.final_norm = torch.nn.Parameter(torch.from_numpy(weights["final_norm"]), requires_grad=False)
        self.layers = torch.nn.ModuleList(Layer(hp, w) for w in weights["layers"])
        self.lora: LoraConfig | None = None
        # masked-diffusion models: a trained offset of the mask token's (tied) embedding
        self.mask_id: int | None = None
        self.mask_delta: torch.nn.Parameter | None = None
        hd = hp["head_dim"]
        self.register_buffer("inv_freq", 1.0 / (hp["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd)),
                             persistent=False)

    # ------------------------------------------------------------------ adapters

    def add_lora(self, cfg: LoraConfig, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        for i, layer in enumerate(self.layers):
            if i >= cfg.first_layer:
                for name in cfg.targets:
                    layer.lin[name].attach(cfg.rank, cfg.scale, gen)
        self.lora = cfg

    def add_mask_embedding(self, mask_id: int) -> None:
        """Train an offset of token mask_id's embedding (tied: its LM-head row moves with it)."""
        self.mask_id = mask_id
        self.mask_delta = torch.nn.Parameter(torch.zeros(self.embed.shape[1], device=self.embed.device))

    def adapter_state(self) -> dict:
        """name -> tensor for every adapter matrix ("layers.{i}.{target}.lora_a|lora_b"), and
        "mask_embedding_delta" with a mask embedding."""
        out = {}
        if self.mask_delta is not None:
            out["mask_embedding_delta"] = self.mask_delta.detach()
        for i, layer in enumerate(self.layers):
            for name, lin in layer.lin.items():
                if lin.lora_a is not None:
                    out[f"layers.{i}.{name}.lora_a"] = lin.lora_a.detach()
                    out[f"layers.{i}.{name}.lora_b"] = lin.lora_b.detach()
        return out

    def load_adapter_state(self, state: dict, partial: bool = False) -> None:
        """Copy LoRA matrices (and the mask embedding) into the model. `partial`: `state` may cover only
        some of the adapted layers (an adapter trained on fewer layers); the others keep their initial
        values (B = 0, so they start as the identity)."""
        expected = set(self.adapter_state())
        if partial:
            extra = sorted(set(state) - expected)
            if extra:
                raise ValueError(f"adapter does not match the model: unexpected {extra[:4]}")
            state = {**self.adapter_state(), **state}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"adapter does not match the model: missing {missing[:4]}, unexpected {extra[:4]}")
        with torch.no_grad():
            if self.mask_delta is not None:
                self.mask_delta.copy_(state["mask_embedding_delta"].float())
            for i, layer in enumerate(self.layers):
                for name, lin in layer.lin.items():
                    if lin.lora_a is not None:
                        a, b = state[f"layers.{i}.{name}.lora_a"], state[f"layers.{i}.{name}.lora_b"]
                        if a.shape != lin.lora_a.shape or b.shape != lin.lora_b.shape:
                            raise ValueError(f"adapter layers.{i}.{name}: shapes {tuple(a.shape)}/{tuple(b.shape)}, "
                                             f"expected {tuple(lin.lora_a.shape)}/{tuple(lin.lora_b.shape)}")
                        lin.lora_a.copy_(a.float())
                        lin.lora_b.copy_(b.float())

    def trainable(self) -> list:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward

    def rope(self, positions: torch.Tensor):
        ang = positions.float()[:, None] * self.inv_freq[None, :]
        emb = torch.cat([ang, ang], dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def hidden(self, ids: torch.Tensor, positions: torch.Tensor | None = None, caches=None,
               frozen_below: int = 0, own_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-normed hidden states [B, T, hidden]. Layers < frozen_below run without autograd.
        own_mask [B or 1, T, T] (bool: query t may attend to own slot j) replaces the causal
        mask over this call's own tokens; cached slots stay visible to all."""
        if positions is None:
            past = 0 if not caches or caches[0].get("k") is None else caches[0]["k"].shape[2]
            positions = torch.arange(past, past + ids.shape[1], device=ids.device)
        cos, sin = self.rope(positions)
        x = F.embedding(ids, self.embed)
        if self.mask_delta is not None:
            x = x + (ids == self.mask_id).unsqueeze(-1).to(x.dtype) * self.mask_delta
        for i, layer in enumerate(self.layers):
            c = caches[i] if caches is not None else None
            if i < frozen_below:
                with torch.no_grad():
                    x = layer(x, cos, sin, c, own_mask)
            else:
                x = layer(x, cos, sin, c, own_mask)
        return rms_norm(x, self.final_norm, self.hp["rms_eps"])

    def logits_at(self, h: torch.Tensor) -> torch.Tensor:
        out = F.linear(h, self.embed)
        if self.mask_delta is not None:  # the tied head row of the mask token, offset as its embedding
            idx = torch.tensor([self.mask_id], device=h.device)
            out = out.index_add(-1, idx, (h @ self.mask_delta).unsqueeze(-1).to(out.dtype))
        return out

    def answer_nll(self, ids: list, start: int, frozen_below: int = 0) -> torch.Tensor:
        """Per-token NLL of ids[start:] given ids[:start] (one sequence; a [n] tensor)."""
        x = torch.tensor([ids], dtype=torch.long, device=self.embed.device)
        h = self.hidden(x, frozen_below=frozen_below)
        logits = self.logits_at(h[0, start - 1:len(ids) - 1])
        return F.cross_entropy(logits.float(), x[0, start:], reduction="none")

    def shared_prefix_nll(self, prefix: list, tails: list, frozen_below: int = 0) -> list:
        """Per-token NLLs of several sequences prefix + tail that share one prefix, which is
        computed once (with autograd above frozen_below, so its gradient is accumulated from
        every tail). tails: (ids, start) pairs; tail ids[start:] are scored given prefix +
        ids[:start] (start >= 1). Equal to answer_nll(prefix + ids, len(prefix) + start) per
        tail; a list of [n] tensors."""
        x, h = self.shared_prefix_hidden(prefix, [ids for ids, _ in tails], frozen_below=frozen_below)
        out = []
        for row, (ids, start) in enumerate(tails):
            logits = self.logits_at(h[row, start - 1:len(ids) - 1])
            out.append(F.cross_entropy(logits.float(), x[row, start:len(ids)], reduction="none"))
        return out

    def shared_prefix_hidden(self, prefix: list, rows: list, own_mask: torch.Tensor | None = None,
                             frozen_below: int = 0, detach_prefix: bool = False):
        """(ids [B, T], hidden [B, T, D]) of rows read after one shared prefix, computed once.
        Rows are right-padded with 0 (a real token never attends to the padding after it under
        the causal mask; an own_mask must keep that true). detach_prefix: the prefix is read
        without autograd (the gradient flows only through the rows)."""
        dev = self.embed.device
        caches = [dict() for _ in self.layers]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_prefix):
            self.hidden(torch.tensor([prefix], dtype=torch.long, device=dev), caches=caches,
                        frozen_below=frozen_below)
        width = max(len(ids) for ids in rows)
        x = torch.tensor([ids + [0] * (width - len(ids)) for ids in rows], dtype=torch.long, device=dev)
        return x, self.hidden(x, caches=caches, frozen_below=frozen_below, own_mask=own_mask)

    @torch.no_grad()
    def greedy(self, prompt: list, stop: set, max_new: int = 24) -> list:
        caches = [dict() for _ in self.layers]
        x = torch.tensor([prompt], dtype=torch.long, device=self.embed.device)
        out = []
        for _ in range(max_new):
            h = self.hidden(x, caches=caches)
            t = int(self.logits_at(h[0, -1]).argmax())
            if t in stop:
                break
            out.append(t)
            x = torch.tensor([[t]], dtype=torch.long, device=self.embed.device)
        return out

    @torch.no_grad()
    def merged_weights(self) -> dict:
        """Per layer and target, the merged [out, in] float32 matrix (only adapted ones)."""
        out = {}
        for i, layer in enumerate(self.layers):
            for name, lin in layer.lin.items():
                if lin.lora_a is not None:
                    out[(i, name)] = lin.merged().float().cpu().numpy()
        return out


def read_gguf(gguf_path: str):
    """(hparams, weights) with weights in the PyTorch [out, in] layout (Q/K un-permuted, NOT scaled)."""
    from gguf import GGUFReader
    import convert_smollm2 as conv

    reader = GGUFReader(gguf_path)
    hp = conv.read_hparams(reader)
    tensors = {t.name: t for t in reader.tensors}
    f = lambda name: conv.tensor_f32(tensors, name)  # noqa: E731
    w = {"embed": f("token_embd.weight"), "final_norm": f("output_norm.weight"), "layers": []}
    for i in range(hp["layers"]):
        p = f"blk.{i}."
        w["layers"].append({
            "attn_norm": f(p + "attn_norm.weight"),
            "ffn_norm": f(p + "ffn_norm.weight"),
            "q": conv.unpermute_rows(f(p + "attn_q.weight"), hp["heads"]),
            "k": conv.unpermute_rows(f(p + "attn_k.weight"), hp["kv_heads"]),
            "v": f(p + "attn_v.weight"),
            "o": f(p + "attn_output.weight"),
            "gate": f(p + "ffn_gate.weight"),
            "up": f(p + "ffn_up.weight"),
            "down": f(p + "ffn_down.weight"),
        })
    return hp, w


def load_base(gguf_path: str) -> SmolLM:
    hp, w = read_gguf(gguf_path)
    model = SmolLM(hp, w)
    model.eval()
    return model
