#!/usr/bin/env python3
"""Writes fixtures/dit_moe_small.safetensors, the PyTorch reference that
tests/dit/test_dit_parity.cpp checks loom's DiT-MoE against.

Run with Debian's torch (python3-torch, CPU): /usr/bin/python3 tests/golden/gen_dit_fixture.py
The model is the benchmark peer's definition, /work/shared/bench/dit_ref.py (imported from that
path, or from $DIT_REF), built small: input 8, 4 channels, patch 2, depth 2, width 32, 4 heads,
4 routed SwiGLU experts (top-2) plus a shared SwiGLU of hidden 2*32, 10 classes, learned sigma.
Every parameter (the zero-initialized adaLN and output layers included) gets non-zero random values
so each path is exercised, and everything runs in float64: dit_ref computes the router softmax and
the balance loss through `.float()`, which is redirected to `.double()` while the model runs.

Stored (float64 unless noted), under loom's parameter names (dit_ref's per-expert Linears are
stacked into experts.w_gate/w_up/w_down [E, F, D] / [E, D, F]):
  every parameter; "pos_embed" [1, T, D] (the §1.2 sin-cos table, set into dit_ref's pos);
  inputs "x" [B, C, I, I], "t" [B], "y" [B] (I64, one label is the null class 10);
  "out" [B, 2C, I, I] (dit_ref's token output unpatchified per §1.6), "aux_loss" (scalar, the sum
  of both layers' balance losses), "expert_counts.<layer>" (I64 [E]), the upstream weight "w"
  (out's shape), and "grad.<param>" = d(sum(out * w) + aux_loss)/d(param) for every parameter.
"""
import contextlib
import importlib.util
import math
import os
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gen_fixtures import write_safetensors  # noqa: E402

DIT_REF = pathlib.Path(os.environ.get("DIT_REF", "/work/shared/bench/dit_ref.py"))
F64 = torch.float64

INPUT, CH, PATCH, DEPTH, WIDTH, HEADS = 8, 4, 2, 2, 32, 4
EXPERTS, TOPK, SHARED_HIDDEN, CLASSES = 4, 2, 2 * 32, 10


def load_dit_ref():
    spec = importlib.util.spec_from_file_location("dit_ref", DIT_REF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def float_means_double():
    """dit_ref's MoE casts router probabilities and counts with .float(); make that f64."""
    had_own = "float" in torch.Tensor.__dict__
    original = torch.Tensor.float
    torch.Tensor.float = lambda self, *args, **kwargs: self.double(*args, **kwargs)
    try:
        yield
    finally:
        if had_own:
            torch.Tensor.float = original
        else:
            del torch.Tensor.float


def sincos_pos_embed(dim, grid):
    """§1.2: row h*grid + w is [sin(w om), cos(w om), sin(h om), cos(h om)],
    om_j = 10000^(-j/(dim/4)): the column coordinate w comes first."""
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=F64) / q)
    coords = torch.arange(grid, dtype=F64)
    h = coords.repeat_interleave(grid)  # token index h*grid + w
    w = coords.repeat(grid)
    hw, ww = h[:, None] * omega, w[:, None] * omega
    return torch.cat([ww.sin(), ww.cos(), hw.sin(), hw.cos()], dim=1)[None]


def unpatchify(tokens, p, c):
    """§1.6: [B, T, p*p*c] -> [B, c, G*p, G*p]; token dims ordered (row, col, channel)."""
    b, t, _ = tokens.shape
    g = int(round(math.sqrt(t)))
    x = tokens.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, g * p, g * p)


def randomize(model):
    """Non-zero values everywhere, scaled so activations stay O(1)."""
    for name, param in model.named_parameters():
        if name == "pos":
            continue
        with torch.no_grad():
            if param.dim() >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn_like(param) / math.sqrt(fan_in))
            else:
                param.copy_(torch.randn_like(param) * 0.1)
    with torch.no_grad():
        model.ye.weight.mul_(math.sqrt(WIDTH) * 0.5)  # a table, not a projection: O(0.5) entries
        for block in model.blocks:
            block.mlp.router.weight.mul_(2.0)  # decisive routing, far from top-k ties


def loom_parameters(model):
    """(loom name, dit_ref tensor or stacked list of tensors) in loom's registration order."""
    out = [
        ("x_embedder.proj.weight", model.xe.weight),
        ("x_embedder.proj.bias", model.xe.bias),
        ("t_embedder.mlp.0.weight", model.te[0].weight),
        ("t_embedder.mlp.0.bias", model.te[0].bias),
        ("t_embedder.mlp.2.weight", model.te[2].weight),
        ("t_embedder.mlp.2.bias", model.te[2].bias),
        ("y_embedder.embedding_table.weight", model.ye.weight),
    ]
    for i, b in enumerate(model.blocks):
        pre = f"blocks.{i}."
        moe = b.mlp
        out += [
            (pre + "attn.qkv.weight", b.qkv.weight),
            (pre + "attn.qkv.bias", b.qkv.bias),
            (pre + "attn.proj.weight", b.proj.weight),
            (pre + "attn.proj.bias", b.proj.bias),
            (pre + "moe.router.weight", moe.router.weight),
            (pre + "moe.experts.w_gate", [e.gate.weight for e in moe.experts]),
            (pre + "moe.experts.w_up", [e.up.weight for e in moe.experts]),
            (pre + "moe.experts.w_down", [e.down.weight for e in moe.experts]),
            (pre + "moe.shared.gate_proj.weight", moe.shared.gate.weight),
            (pre + "moe.shared.up_proj.weight", moe.shared.up.weight),
            (pre + "moe.shared.down_proj.weight", moe.shared.down.weight),
            (pre + "adaLN_modulation.1.weight", b.ada[1].weight),
            (pre + "adaLN_modulation.1.bias", b.ada[1].bias),
        ]
    out += [
        ("final_layer.adaLN_modulation.1.weight", model.fada[1].weight),
        ("final_layer.adaLN_modulation.1.bias", model.fada[1].bias),
        ("final_layer.linear.weight", model.out.weight),
        ("final_layer.linear.bias", model.out.bias),
    ]
    return out


def value_of(entry):
    return torch.stack([p.detach() for p in entry]) if isinstance(entry, list) else entry.detach()


def grad_of(entry):
    def one(p):
        return p.grad if p.grad is not None else torch.zeros_like(p)
    return torch.stack([one(p) for p in entry]) if isinstance(entry, list) else one(entry)


def check_routing_margin(router_probs):
    """Every token's k-th and (k+1)-th router probabilities must differ clearly (no near-ties)."""
    for i, probs in enumerate(router_probs):
        top = probs.topk(TOPK + 1, dim=-1).values
        margin = (top[:, TOPK - 1] - top[:, TOPK]).min().item()
        assert margin > 1e-6, f"layer {i}: top-k margin {margin} too small for a parity test"


def main():
    torch.set_default_dtype(F64)
    torch.manual_seed(20240611)
    ref = load_dit_ref()
    model = ref.DiT(DEPTH, WIDTH, HEADS, n_exp=EXPERTS, topk=TOPK, shared_hidden=SHARED_HIDDEN,
                    inp=INPUT, ch=CH, p=PATCH, ncls=CLASSES, learn_sigma=True).to(F64)
    randomize(model)
    pos = sincos_pos_embed(WIDTH, INPUT // PATCH)
    with torch.no_grad():
        model.pos.copy_(pos)
    model.train()

    B = 3
    x = torch.randn(B, CH, INPUT, INPUT, dtype=F64)
    t = torch.tensor([1.0, 250.5, 999.0], dtype=F64)
    y = torch.tensor([2, CLASSES, 7], dtype=torch.int64)  # the middle label is the null class

    probs = []
    hooks = [b.mlp.router.register_forward_hook(
        lambda mod, inp, out: probs.append(out.detach().softmax(-1))) for b in model.blocks]
    with float_means_double():
        tokens = model(x, t, y)
        aux = model.aux_loss()
    for h in hooks:
        h.remove()
    check_routing_margin(probs)
    out = unpatchify(tokens, PATCH, 2 * CH)
    assert out.dtype == F64 and aux.dtype == F64, (out.dtype, aux.dtype)
    w = torch.randn(out.shape, dtype=F64)
    (torch.sum(out * w) + aux).backward()

    counts = [torch.bincount(p.topk(TOPK, -1).indices.reshape(-1), minlength=EXPERTS)
              for p in probs]

    params = loom_parameters(model)
    named = {n for n, _ in model.named_parameters()} - {"pos"}
    used = set()
    lookup = {id(p): n for n, p in model.named_parameters()}
    for _, entry in params:
        for p in (entry if isinstance(entry, list) else [entry]):
            used.add(lookup[id(p)])
    assert used == named, f"unmapped dit_ref parameters: {sorted(named - used)}"

    tensors = [(name, value_of(entry)) for name, entry in params]
    tensors += [("pos_embed", pos), ("x", x), ("t", t), ("y", y), ("out", out.detach()),
                ("aux_loss", aux.detach()), ("w", w)]
    tensors += [(f"expert_counts.{i}", c) for i, c in enumerate(counts)]
    tensors += [(f"grad.{name}", grad_of(entry)) for name, entry in params]
    meta = {"case": "dit_moe_small", "generator": "tests/golden/gen_dit_fixture.py",
            "reference": "shared/bench/dit_ref.py", "torch": torch.__version__,
            "input_size": INPUT, "in_channels": CH, "patch_size": PATCH, "depth": DEPTH,
            "hidden_size": WIDTH, "num_heads": HEADS, "num_experts": EXPERTS, "top_k": TOPK,
            "shared_hidden": SHARED_HIDDEN, "num_classes": CLASSES}
    path = HERE / "fixtures" / "dit_moe_small.safetensors"
    write_safetensors(path, tensors, meta)
    print(f"wrote {path} ({path.stat().st_size} bytes), aux {aux.item():.6f}, "
          f"counts {[c.tolist() for c in counts]}")


if __name__ == "__main__":
    main()
