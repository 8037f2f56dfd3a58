"""A Mamba (selective state-space) block in plain PyTorch, with `mamba_ssm.Mamba`'s parameter names.

The parameter names and shapes match `mamba_ssm.modules.mamba_simple.Mamba`, so a checkpoint moves between
this reference implementation and the fused CUDA kernels (see `kernels.py`). Two ways to run it:

- `forward(x)` scans a whole sequence `[batch, length, d_model]` (used inside a sentence);
- `step(x, state)` advances a recurrent state by one token (used across the sentences of a session).

Running `step` over a sequence gives the same outputs as `forward` over it (a test holds us to that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from depscreen.engine.model import kernels


@dataclass
class MambaState:
    """Recurrent state of one Mamba layer for a batch: the conv window and the SSM hidden state."""

    conv: torch.Tensor
    """`[batch, d_inner, d_conv]`: the last `d_conv` inputs of the depthwise causal convolution."""
    ssm: torch.Tensor
    """`[batch, d_inner, d_state]`: the selective state-space hidden state."""


class Mamba(nn.Module):
    """One Mamba block: in_proj → causal depthwise conv → selective scan gated by SiLU(z) → out_proj."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

        # Time steps start log-uniform in [dt_min, dt_max]; the bias holds softplus^-1(dt).
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(
            min=dt_init_floor
        )
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_inner))

    def allocate_state(self, batch: int, device: torch.device | None = None) -> MambaState:
        """A zero state for `batch` independent sequences."""
        device = device or self.A_log.device
        dtype = self.A_log.dtype
        return MambaState(
            conv=torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype),
            ssm=torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype),
        )

    def _ssm_inputs(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """delta `[..., d_inner]` (pre-softplus, bias not added), B and C `[..., d_state]` from the conv output."""
        x_dbl = self.x_proj(u)
        dt, b, c = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return dt @ self.dt_proj.weight.T, b, c

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scan a whole sequence: `[batch, length, d_model]` → `[batch, length, d_model]`."""
        length = hidden.shape[1]
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        u = F.silu(self.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)
        delta, b, c = self._ssm_inputs(u)
        a = -torch.exp(self.A_log.float())
        y = kernels.selective_scan(u, delta, a, b, c, self.D.float(), z, self.dt_proj.bias.float())
        return self.out_proj(y)

    def step(self, hidden: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """Advance by one token: `[batch, d_model]` → `[batch, d_model]` and the new state (inputs untouched)."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        conv = torch.cat([state.conv[:, :, 1:], x.unsqueeze(-1)], dim=-1)
        u = F.silu((conv * self.conv1d.weight.squeeze(1)).sum(-1) + self.conv1d.bias)
        delta, b, c = self._ssm_inputs(u)
        a = -torch.exp(self.A_log.float())
        y, ssm = kernels.state_update(state.ssm, u, delta, a, b, c, self.D.float(), z, self.dt_proj.bias.float())
        return self.out_proj(y), MambaState(conv=conv, ssm=ssm)
