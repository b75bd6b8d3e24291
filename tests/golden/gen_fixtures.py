#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures that tests/golden/test_parity.cpp checks loom against.

Run with Debian's torch (python3-torch, CPU): /usr/bin/python3 tests/golden/gen_fixtures.py
Each case becomes fixtures/<case>.safetensors holding, in float64: the inputs (parameters named as
the module would name them), "out", the upstream gradient "grad_out" and "grad.<input>" for every
differentiable input, i.e. d(sum(out * grad_out))/d(input). Integer inputs (targets, indices) and
masks are stored as I64 / BOOL. Scalar settings (eps, dim, stride, ...) go in "__metadata__" as
strings. The files are written with struct + json (no safetensors package) and are checked in:
the C++ tests never need torch. Every case seeds torch from a hash of its name, so adding a case
leaves the others byte-identical.
"""
import json
import math
import pathlib
import struct
import sys
import zlib

import torch
import torch.nn.functional as F

OUT_DIR = pathlib.Path(__file__).resolve().parent / "fixtures"
F64 = torch.float64
DTYPE_NAMES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.bool: "BOOL",
}


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor); metadata: dict of str -> str."""
    assert sys.byteorder == "little", "safetensors stores little-endian data"
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        data = t.numpy().tobytes()
        header[name] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def seed_for(name):
    torch.manual_seed(zlib.crc32(name.encode()))


def randn(*shape, scale=1.0):
    return torch.randn(tuple(shape), dtype=F64) * scale


CASES = []


def case(fn):
    CASES.append(fn)
    return fn


def record(name, inputs, forward, metadata=None, extra_outputs=None):
    """Runs forward(**inputs) in f64, backpropagates a random upstream gradient and writes the
    fixture. inputs: dict name -> tensor (floating ones become leaves requiring grad)."""
    leaves = {}
    for k, v in inputs.items():
        v = v.detach().clone()
        if v.is_floating_point():
            v.requires_grad_(True)
        leaves[k] = v
    out = forward(**leaves)
    grad_out = randn(*out.shape)
    out.backward(grad_out)
    tensors = list(leaves.items()) + [("out", out), ("grad_out", grad_out)]
    tensors += list((extra_outputs or {}).items())
    for k, v in leaves.items():
        if v.is_floating_point():
            assert v.grad is not None, f"{name}: input {k} got no gradient"
            tensors.append((f"grad.{k}", v.grad))
    meta = {"case": name, "generator": "tests/golden/gen_fixtures.py",
            "torch": torch.__version__}
    meta.update({k: repr(v) for k, v in (metadata or {}).items()})
    write_safetensors(OUT_DIR / f"{name}.safetensors", tensors, meta)


def attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v, with masked-out (False) positions set to -inf."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


# -- ops -------------------------------------------------------------------------------------------

@case
def matmul_batched_transposed(name):
    # a [2, 3, 4] @ b[2, 5, 4]^T: the right operand is a transposed view.
    record(name, {"a": randn(2, 3, 4), "b": randn(2, 5, 4)},
           lambda a, b: a @ b.transpose(-2, -1))


@case
def matmul_broadcast(name):
    # a [2, 2, 3, 4] @ b [4, 5]: b broadcasts over both batch dims.
    record(name, {"a": randn(2, 2, 3, 4), "b": randn(4, 5)}, lambda a, b: a @ b)


@case
def softmax(name):
    record(name, {"x": randn(2, 3, 5, scale=2)}, lambda x: torch.softmax(x, dim=-1),
           {"dim": -1})


@case
def log_softmax(name):
    record(name, {"x": randn(2, 4, 3, scale=2)}, lambda x: torch.log_softmax(x, dim=1),
           {"dim": 1})


@case
def layer_norm_affine(name):
    eps = 1e-5
    record(name, {"x": randn(2, 3, 6, scale=2) + 0.5, "weight": randn(6), "bias": randn(6)},
           lambda x, weight, bias: F.layer_norm(x, (6,), weight, bias, eps), {"eps": eps})


@case
def layer_norm_plain(name):
    eps = 1e-6
    record(name, {"x": randn(4, 6, scale=3) - 1}, lambda x: F.layer_norm(x, (6,), eps=eps),
           {"eps": eps})


@case
def rms_norm(name):
    eps = 1e-6

    def forward(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    record(name, {"x": randn(2, 3, 8), "weight": randn(8)}, forward, {"eps": eps})


@case
def gelu_tanh(name):
    record(name, {"x": randn(3, 7, scale=3)}, lambda x: F.gelu(x, approximate="tanh"))


@case
def silu(name):
    record(name, {"x": randn(3, 7, scale=3)}, lambda x: F.silu(x))


@case
def cross_entropy(name):
    targets = torch.randint(0, 5, (6,))
    targets[2] = -100  # ignored: excluded from the sum and from the mean's count
    record(name, {"logits": randn(6, 5, scale=2), "targets": targets},
           lambda logits, targets: F.cross_entropy(logits, targets, ignore_index=-100),
           {"ignore_index": -100})


@case
def mse_loss(name):
    record(name, {"input": randn(3, 4), "target": randn(3, 4)},
           lambda input, target: F.mse_loss(input, target))


@case
def conv2d(name):
    record(name, {"x": randn(2, 3, 6, 6), "weight": randn(4, 3, 3, 3, scale=0.3),
                  "bias": randn(4)},
           lambda x, weight, bias: F.conv2d(x, weight, bias, stride=2, padding=1),
           {"stride": 2, "padding": 1})


@case
def embedding(name):
    # Repeated indices: their rows' gradients must accumulate.
    indices = torch.tensor([[1, 4, 1], [6, 0, 4]], dtype=torch.int64)
    record(name, {"indices": indices, "table": randn(7, 4)},
           lambda indices, table: F.embedding(indices, table))


@case
def attention_plain(name):
    record(name, {"q": randn(2, 2, 5, 4), "k": randn(2, 2, 6, 4), "v": randn(2, 2, 6, 3)},
           lambda q, k, v: attention(q, k, v))


@case
def attention_masked(name):
    # A [Tq, Tk] bool mask broadcast over [B, H]; every row keeps at least its diagonal.
    mask = torch.rand(5, 6) < 0.6
    mask |= torch.eye(5, 6, dtype=torch.bool)
    record(name, {"q": randn(2, 2, 5, 4), "k": randn(2, 2, 6, 4), "v": randn(2, 2, 6, 3),
                  "mask": mask},
           lambda q, k, v, mask: attention(q, k, v, mask))


def topk_case(name, k, dim, largest):
    x = randn(4, 6)
    indices = torch.topk(x, k, dim=dim, largest=largest).indices
    record(name, {"x": x}, lambda x: torch.topk(x, k, dim=dim, largest=largest).values,
           {"k": k, "dim": dim, "largest": int(largest)}, {"out_indices": indices})


@case
def topk_largest(name):
    topk_case(name, 3, -1, True)


@case
def topk_smallest(name):
    topk_case(name, 2, 0, False)


# -- modules, written functionally (parameters named as loom's modules name them) -----------------

@case
def linear_module(name):
    record(name, {"x": randn(2, 3, 5), "weight": randn(4, 5, scale=0.5), "bias": randn(4)},
           lambda x, weight, bias: F.linear(x, weight, bias))


@case
def mlp_module(name):
    # timm Mlp: fc1 -> GELU(tanh) -> fc2.
    D, hidden = 6, 12

    def forward(x, fc1_w, fc1_b, fc2_w, fc2_b):
        return F.linear(F.gelu(F.linear(x, fc1_w, fc1_b), approximate="tanh"), fc2_w, fc2_b)

    inputs = {"x": randn(2, 4, D), "fc1_w": randn(hidden, D, scale=D ** -0.5),
              "fc1_b": randn(hidden, scale=0.1), "fc2_w": randn(D, hidden, scale=hidden ** -0.5),
              "fc2_b": randn(D, scale=0.1)}
    renamed = {"fc1_w": "fc1.weight", "fc1_b": "fc1.bias", "fc2_w": "fc2.weight",
               "fc2_b": "fc2.bias"}
    record_renamed(name, inputs, forward, renamed)


@case
def swiglu_module(name):
    # W_down(silu(W_gate x) * W_up x), no biases.
    D, hidden = 6, 10

    def forward(x, gate, up, down):
        return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)

    inputs = {"x": randn(2, 4, D), "gate": randn(hidden, D, scale=D ** -0.5),
              "up": randn(hidden, D, scale=D ** -0.5),
              "down": randn(D, hidden, scale=hidden ** -0.5)}
    renamed = {"gate": "gate.weight", "up": "up.weight", "down": "down.weight"}
    record_renamed(name, inputs, forward, renamed)


MHA_B, MHA_T, MHA_D, MHA_H = 2, 5, 8, 2


def mha_forward(x, qkv_w, qkv_b, proj_w, proj_b):
    B, T, D = x.shape
    H, hd = MHA_H, D // MHA_H
    qkv = F.linear(x, qkv_w, qkv_b).reshape(B, T, 3, H, hd).permute(2, 0, 3, 1, 4)
    o = attention(qkv[0], qkv[1], qkv[2])  # [B, H, T, hd]
    return F.linear(o.transpose(1, 2).reshape(B, T, D), proj_w, proj_b)


@case
def mha_module(name):
    D = MHA_D
    inputs = {"x": randn(MHA_B, MHA_T, D), "qkv_w": randn(3 * D, D, scale=D ** -0.5),
              "qkv_b": randn(3 * D, scale=0.1), "proj_w": randn(D, D, scale=D ** -0.5),
              "proj_b": randn(D, scale=0.1)}
    # Cross-check the [B, T, 3, H, hd] layout against torch's own MultiheadAttention.
    ref = torch.nn.MultiheadAttention(D, MHA_H, batch_first=True, dtype=F64)
    with torch.no_grad():
        ref.in_proj_weight.copy_(inputs["qkv_w"])
        ref.in_proj_bias.copy_(inputs["qkv_b"])
        ref.out_proj.weight.copy_(inputs["proj_w"])
        ref.out_proj.bias.copy_(inputs["proj_b"])
        x = inputs["x"]
        expected = ref(x, x, x, need_weights=False)[0]
        assert torch.allclose(mha_forward(**inputs), expected, atol=1e-12, rtol=0)
    renamed = {"qkv_w": "qkv.weight", "qkv_b": "qkv.bias", "proj_w": "proj.weight",
               "proj_b": "proj.bias"}
    record_renamed(name, inputs, mha_forward, renamed, {"heads": MHA_H})


@case
def layer_norm_module(name):
    D, eps = 8, 1e-6
    ln = torch.nn.LayerNorm(D, eps=eps, dtype=F64)
    with torch.no_grad():
        ln.weight.copy_(1 + randn(D, scale=0.2))
        ln.bias.copy_(randn(D, scale=0.2))
    record_renamed(name, {"x": randn(2, 5, D), "w": ln.weight.detach(), "b": ln.bias.detach()},
                   lambda x, w, b: F.layer_norm(x, (D,), w, b, eps),
                   {"w": "weight", "b": "bias"}, {"eps": eps})
    # The module itself gives the same forward.
    with torch.no_grad():
        x = randn(3, D)
        assert torch.allclose(ln(x), F.layer_norm(x, (D,), ln.weight, ln.bias, eps))


# -- optimizers ------------------------------------------------------------------------------------

@case
def adamw_5_steps(name):
    # torch.optim.AdamW (single-tensor path) in float32, as loom's AdamW computes: the initial
    # parameters "param.<p>", each step's gradient "grad.<t>.<p>" and the parameters after it
    # "after.<t>.<p>", and the final "exp_avg.<p>" / "exp_avg_sq.<p>". Checked by
    # tests/optim/test_adamw_parity.cpp.
    settings = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1,
                "steps": 5}
    shapes = {"w": (3, 4), "b": (4,), "e": (2, 3, 2)}
    params = {p: randn(*shape).float().requires_grad_(True) for p, shape in shapes.items()}
    tensors = [(f"param.{p}", t.detach().clone()) for p, t in params.items()]
    opt = torch.optim.AdamW(params.values(), lr=settings["lr"],
                            betas=(settings["beta1"], settings["beta2"]), eps=settings["eps"],
                            weight_decay=settings["weight_decay"], foreach=False)
    for t in range(settings["steps"]):
        for p, param in params.items():
            # Gradients of mixed magnitude, so eps and the bias corrections both matter.
            param.grad = randn(*param.shape, scale=10.0 ** (t % 3 - 2)).float()
            tensors.append((f"grad.{t}.{p}", param.grad.clone()))
        opt.step()
        tensors += [(f"after.{t}.{p}", param.detach().clone()) for p, param in params.items()]
    for p, param in params.items():
        tensors.append((f"exp_avg.{p}", opt.state[param]["exp_avg"]))
        tensors.append((f"exp_avg_sq.{p}", opt.state[param]["exp_avg_sq"]))
    meta = {"case": name, "generator": "tests/golden/gen_fixtures.py", "torch": torch.__version__}
    meta.update({k: repr(v) for k, v in settings.items()})
    write_safetensors(OUT_DIR / f"{name}.safetensors", tensors, meta)


def record_renamed(name, inputs, forward, renamed, metadata=None):
    """record() with the stored names of some inputs replaced (Python identifiers cannot hold the
    dots of parameter paths such as "fc1.weight")."""
    originals = {renamed.get(k, k): k for k in inputs}

    def forward_by_stored_name(**stored):
        return forward(**{originals[k]: v for k, v in stored.items()})

    record(name, {renamed.get(k, k): v for k, v in inputs.items()}, forward_by_stored_name,
           metadata)


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(F64)
    for fn in CASES:
        seed_for(fn.__name__)
        fn(fn.__name__)
    total = sum(p.stat().st_size for p in OUT_DIR.glob("*.safetensors"))
    print(f"wrote {len(CASES)} fixtures to {OUT_DIR} ({total} bytes)")


if __name__ == "__main__":
    main()
