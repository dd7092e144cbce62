"""Signal-processing pieces shared by the architectures' in-graph front ends."""
from __future__ import annotations

import math


def dft_basis(window, n_fft: int):
    """The real DFT as Conv1d weights [2 * (n_fft // 2 + 1), 1, n_fft]: cosines then negated sines, times the
    window zero-padded (centred) to n_fft as torch.stft does; computed in float64, returned as float32."""
    import torch

    win = window.numel()
    left = (n_fft - win) // 2
    w = torch.zeros(n_fft, dtype=torch.float64)
    w[left:left + win] = window.double()
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    ang = 2 * math.pi * k * n / n_fft
    return torch.cat([torch.cos(ang) * w, -torch.sin(ang) * w], 0).float().unsqueeze(1)
