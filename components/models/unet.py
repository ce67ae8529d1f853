"""A 2-D U-Net: the encoder-decoder with skip connections of Ronneberger et al., as Kelz and Widmer list it.

Levels are given by their channel counts: `channels[0]` is the input block's
width, each further entry one max-pool-2 step down, the last one the bottleneck.
The decoder climbs back with bilinear x2 upsampling, concatenates the encoder's
output of the same level and runs a double convolution that narrows to the next
level's width (the input block's width at the top); a 1x1 convolution with bias
and no activation maps to `out_channels`. With channels (64, 128, 256, 512, 512)
and one channel in and out this is Kelz and Widmer's listing (appendix B):
13,390,209 parameters. Upsampling uses align_corners=True, as the Pytorch-UNet code
(milesial) whose layer names and widths the listing follows does. Any input of at least
2^(levels - 1) per side works: the upsampled map is padded to its skip's size where
pooling floored an odd size.

With `conditions` > 0 the network is conditioned on a class index (Jointist's
f_MSS: which instrument to separate) through FiLM after every double convolution:
the block's output h becomes (1 + gamma_c) h + beta_c, per channel. Without it
the network, its parameters and its state-dict keys are exactly the unconditioned ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.01


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """[3x3 conv (no bias: BatchNorm follows) -> BatchNorm -> LeakyReLU(0.01)] x 2."""
    layers: list[nn.Module] = []
    for c_in in (in_channels, out_channels):
        layers += [nn.Conv2d(c_in, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.LeakyReLU(LEAK)]
    return nn.Sequential(*layers)


class FiLM(nn.Module):
    """Per-channel scale and shift chosen by a class index: [B, C, ...] x [B] -> [B, C, ...]."""

    def __init__(self, conditions: int, channels: int, init_std: float = 0.1):
        super().__init__()
        # gamma and beta start small rather than zero, so that every condition is distinct from the first step
        self.scale = nn.Embedding(conditions, channels)
        self.shift = nn.Embedding(conditions, channels)
        nn.init.normal_(self.scale.weight, std=init_std)
        nn.init.normal_(self.shift.weight, std=init_std)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        view = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return x * (1 + self.scale(condition).view(view)) + self.shift(condition).view(view)


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        conditions: int = 0,
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least two levels of channels, got {list(channels)}")
        self.inc = double_conv(in_channels, channels[0])
        self.down = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))
        # Level l (from the bottom) takes the level below's output plus its own skip and narrows to level l-1's width.
        self.up = nn.ModuleList()
        widths = list(channels)  # of every block's output, in the order forward runs them
        below = channels[-1]
        for level in range(len(channels) - 2, -1, -1):
            out = channels[max(level - 1, 0)]
            self.up.append(double_conv(below + channels[level], out))
            widths.append(out)
            below = out
        self.out = nn.Conv2d(below, out_channels, 1)
        if conditions:
            self.film = nn.ModuleList(FiLM(conditions, width) for width in widths)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        films = iter(self.film) if hasattr(self, "film") else None
        if (films is None) != (condition is None):
            raise ValueError("a conditioned U-Net needs a condition, an unconditioned one takes none")

        def run(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            h = block(h)
            return h if films is None else next(films)(h, condition)

        skips = [run(self.inc, x)]
        for block in self.down:
            skips.append(run(block, F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
            h = F.pad(h, (0, skip.shape[-1] - h.shape[-1], 0, skip.shape[-2] - h.shape[-2]))
            h = run(block, torch.cat([skip, h], dim=1))
        return self.out(h)
