#!/usr/bin/env python3
"""Writes the Gaussian-diffusion reference fixtures that tests/diffusion/test_gaussian_diffusion.cpp
checks loom::diffusion::GaussianDiffusion against.

Run with Debian's torch: /usr/bin/python3 tests/golden/gen_diffusion_fixture.py

The equations are those of ALGORITHMS.md §1.9/§1.10 (DiT's gaussian_diffusion.py, respace.py and
diffusion_utils.py restated there), written out again here: the schedule in numpy float64, the
losses in torch float64 so autograd gives the reference gradient of the loss with respect to the
model output. Unlike the reference the per-sample coefficients stay float64 (it casts them to
float32); the C++ side runs these cases in f64 too. Files (same layout as gen_fixtures.py):

diffusion_losses.safetensors: inputs x0, noise [B, C, H, W], t (I64, includes 0), out = the model
  output [B, 2C, H, W]; outputs loss, mse, vb (batch means), vb_per_sample [B] and grad.out =
  d loss / d out.
diffusion_respaced.safetensors: the 250-step respaced process: timesteps (I64, space_timesteps),
  alphas_cumprod [250]; one p_mean_variance call on x_t, t (I64, respaced indices), out with
  outputs mean, log_variance, pred_x0 and t_model (the original steps fed to the model).
"""
import math
import pathlib
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gen_fixtures import OUT_DIR, write_safetensors  # noqa: E402

F64 = torch.float64


def linear_betas(T):
    scale = 1000 / T
    return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)


def space_timesteps(T, count):
    stride = 1 if count <= 1 else (T - 1) / (count - 1)
    cur, steps = 0.0, []
    for _ in range(count):
        steps.append(round(cur))
        cur += stride
    return sorted(set(steps))


def respaced_betas(betas, keep):
    ac = np.cumprod(1.0 - betas)
    out, last = [], 1.0
    for i in keep:
        out.append(1 - ac[i] / last)
        last = ac[i]
    return np.array(out, dtype=np.float64)


class Schedule:
    def __init__(self, betas):
        self.betas = betas
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        self.alphas_cumprod = ac
        self.sqrt_ac = np.sqrt(ac)
        self.sqrt_1m_ac = np.sqrt(1.0 - ac)
        self.sqrt_recip_ac = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_ac = np.sqrt(1.0 / ac - 1)
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        self.post_log_var_clipped = np.log(np.append(post_var[1], post_var[1:]))
        self.coef1 = betas * np.sqrt(ac_prev) / (1.0 - ac)
        self.coef2 = (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac)
        self.log_betas = np.log(betas)

    @staticmethod
    def at(arr, t, ndim):
        return torch.from_numpy(arr)[t].view(-1, *([1] * (ndim - 1)))

    def p_mean_variance(self, out, x_t, t):
        C = x_t.shape[1]
        eps, v = out[:, :C], out[:, C:]
        frac = (v + 1) / 2
        n = x_t.dim()
        log_var = frac * self.at(self.log_betas, t, n) + (1 - frac) * self.at(
            self.post_log_var_clipped, t, n)
        pred_x0 = self.at(self.sqrt_recip_ac, t, n) * x_t - self.at(self.sqrt_recipm1_ac, t, n) * eps
        mean = self.at(self.coef1, t, n) * pred_x0 + self.at(self.coef2, t, n) * x_t
        return mean, log_var, pred_x0


def normal_kl(m1, lv1, m2, lv2):
    return 0.5 * (-1.0 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def approx_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def mean_flat(x):
    return x.mean(dim=list(range(1, x.dim())))


def training_losses(s, out, x0, t, noise):
    n = x0.dim()
    C = x0.shape[1]
    x_t = s.at(s.sqrt_ac, t, n) * x0 + s.at(s.sqrt_1m_ac, t, n) * noise
    eps = out[:, :C]
    frozen = torch.cat([eps.detach(), out[:, C:]], dim=1)
    true_mean = s.at(s.coef1, t, n) * x0 + s.at(s.coef2, t, n) * x_t
    true_log_var = s.at(s.post_log_var_clipped, t, n)
    mean, log_var, _ = s.p_mean_variance(frozen, x_t, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, mean, log_var)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / math.log(2.0)
    vb = torch.where(t == 0, nll, kl)
    mse = mean_flat((noise - eps) ** 2)
    return (mse + vb).mean(), mse.mean(), vb.mean(), vb


def meta(name):
    return {"case": name, "generator": "tests/golden/gen_diffusion_fixture.py",
            "torch": torch.__version__}


def losses_case(name):
    torch.manual_seed(zlib.crc32(name.encode()))
    s = Schedule(linear_betas(1000))
    B, C, H, W = 6, 2, 3, 3
    x0 = torch.rand(B, C, H, W, dtype=F64) * 2 - 1
    x0[0, 0, 0, :] = torch.tensor([-1.0, 1.0, -0.9995])  # the two edge bins and next to one
    x0[4, 1, 2, :] = torch.tensor([0.9995, -1.0, 0.5])
    t = torch.tensor([0, 1, 317, 999, 0, 42])
    noise = torch.randn(B, C, H, W, dtype=F64)
    eps_hat = noise + 0.3 * torch.randn(B, C, H, W, dtype=F64)
    v = torch.rand(B, C, H, W, dtype=F64) * 2.4 - 1.2
    out = torch.cat([eps_hat, v], dim=1).requires_grad_(True)
    loss, mse, vb, vb_per = training_losses(s, out, x0, t, noise)
    loss.backward()
    tensors = [("x0", x0), ("noise", noise), ("t", t), ("out", out), ("loss", loss),
               ("mse", mse), ("vb", vb), ("vb_per_sample", vb_per), ("grad.out", out.grad)]
    write_safetensors(OUT_DIR / f"{name}.safetensors", tensors, meta(name))


def respaced_case(name):
    torch.manual_seed(zlib.crc32(name.encode()))
    keep = space_timesteps(1000, 250)
    s = Schedule(respaced_betas(linear_betas(1000), keep))
    B, C, H, W = 4, 2, 2, 2
    x_t = torch.randn(B, C, H, W, dtype=F64)
    t = torch.tensor([0, 1, 100, 249])
    out = torch.cat([torch.randn(B, C, H, W, dtype=F64),
                     torch.rand(B, C, H, W, dtype=F64) * 2 - 1], dim=1)
    mean, log_var, pred_x0 = s.p_mean_variance(out, x_t, t)
    t_model = torch.tensor(keep, dtype=F64)[t]
    tensors = [("timesteps", torch.tensor(keep)),
               ("alphas_cumprod", torch.from_numpy(s.alphas_cumprod)), ("x_t", x_t), ("t", t),
               ("out", out), ("mean", mean), ("log_variance", log_var), ("pred_x0", pred_x0),
               ("t_model", t_model)]
    write_safetensors(OUT_DIR / f"{name}.safetensors", tensors, meta(name))


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    losses_case("diffusion_losses")
    respaced_case("diffusion_respaced")
    print(f"wrote diffusion_losses and diffusion_respaced to {OUT_DIR}")


if __name__ == "__main__":
    main()
