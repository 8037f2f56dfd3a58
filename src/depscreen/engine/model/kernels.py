"""Selective-scan kernels: the PyTorch reference, or mamba-ssm's fused CUDA kernels when they can run.

`mamba-ssm` (extra `gpu`) imports only where CUDA is present. Its kernels are used for tensors on a CUDA
device when it imports; everything else runs the PyTorch reference below, which is the ground truth on CPU.
Both compute, per channel d and state n, with delta = softplus(dt + dt_bias):

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t,   output = y_t * silu(z_t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_scan
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update as _cuda_update
except ImportError:  # no CUDA or no `gpu` extra: the reference path is used
    _cuda_scan = None
    _cuda_update = None


def cuda_kernels_available() -> bool:
    """True when mamba-ssm's fused kernels imported (they still run only on CUDA tensors)."""
    return _cuda_scan is not None


def kernels_for(device: torch.device) -> str:
    """Name of the kernels used on `device`: "mamba-ssm" or "pytorch"."""
    return "mamba-ssm" if device.type == "cuda" and cuda_kernels_available() else "pytorch"


def selective_scan(
    u: torch.Tensor,
    dt: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    z: torch.Tensor,
    dt_bias: torch.Tensor,
) -> torch.Tensor:
    """Scan `[batch, length, d_inner]` inputs (B, C: `[batch, length, d_state]`) to `[batch, length, d_inner]`."""
    if kernels_for(u.device) == "mamba-ssm":
        y = _cuda_scan(
            u.transpose(1, 2).contiguous(),
            dt.transpose(1, 2).contiguous(),
            a,
            b.transpose(1, 2).contiguous(),
            c.transpose(1, 2).contiguous(),
            D=d,
            z=z.transpose(1, 2).contiguous(),
            delta_bias=dt_bias,
            delta_softplus=True,
        )
        return y.transpose(1, 2)
    delta = F.softplus(dt + dt_bias)
    decay = torch.exp(delta.unsqueeze(-1) * a)
    drive = (delta * u).unsqueeze(-1) * b.unsqueeze(2)
    h = torch.zeros_like(decay[:, 0])
    states = []
    # unbind, not decay[:, t]: one backward node for the whole sequence instead of a zero-filled copy per step.
    for decay_t, drive_t in zip(decay.unbind(1), drive.unbind(1), strict=True):
        h = decay_t * h + drive_t
        states.append(h)
    y = torch.einsum("bldn,bln->bld", torch.stack(states, dim=1), c) + d * u
    return y * F.silu(z)


def state_update(
    state: torch.Tensor,
    u: torch.Tensor,
    dt: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    d: torch.Tensor,
    z: torch.Tensor,
    dt_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step for `[batch, d_inner]` inputs and state `[batch, d_inner, d_state]`; returns (y, new state)."""
    if kernels_for(u.device) == "mamba-ssm":
        new_state = state.clone()
        y = _cuda_update(new_state, u, dt, a, b, c, D=d, z=z, dt_bias=dt_bias, dt_softplus=True)
        return y, new_state
    delta = F.softplus(dt + dt_bias)
    new_state = torch.exp(delta.unsqueeze(-1) * a) * state + (delta * u).unsqueeze(-1) * b.unsqueeze(1)
    y = (new_state * c.unsqueeze(1)).sum(-1) + d * u
    return y * F.silu(z), new_state
