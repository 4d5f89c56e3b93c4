"""Batched augmentation on whole (N, C, H, W) tensors, uint8 or float, seeded by a generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _batch(x: torch.Tensor) -> torch.Tensor:
    # A (N, H, W) batch would silently broadcast to (N, N, H, W) in hflip: insist on channels.
    if x.ndim != 4:
        raise ValueError(f"augmentation expects an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    return x


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability p, or, given a boolean `mask` (N,), the images it marks."""
    if mask is None:
        mask = _uniform(len(_batch(x)), generator, x.device) < p
    return torch.where(mask.to(_batch(x).device).view(-1, 1, 1, 1), x.flip(-1), x)


def random_crop(x: torch.Tensor, padding: int = 2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad with zeros by `padding` pixels and cut a random window of the original size."""
    if padding <= 0:
        return _batch(x)
    n, _, h, w = _batch(x).shape
    padded = F.pad(x, (padding,) * 4)
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h) + shifts[0].view(n, 1)).view(n, 1, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + shifts[1].view(n, 1)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chan, rows, cols]


def rotate(x: torch.Tensor, max_degrees: float = 10.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by a uniform angle in [-max_degrees, max_degrees] (bilinear, zero fill)."""
    if max_degrees <= 0:
        return _batch(x)
    theta = (_uniform(len(_batch(x)), generator, x.device) * 2 - 1) * math.radians(max_degrees)
    cos, sin, zero = theta.cos(), theta.sin(), torch.zeros_like(theta)
    affine = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(affine, list(x.shape), align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(x.dtype) if x.dtype == torch.uint8 else out.to(x.dtype)


def random_erase(
    x: torch.Tensor,
    p: float = 0.5,
    generator: torch.Generator | None = None,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020): with probability p, fill a rectangle covering a uniform share
    `area` of the image, its height/width ratio log-uniform in `aspect`, with random pixel values."""
    if p <= 0:
        return _batch(x)
    n, _, h, w = _batch(x).shape
    u = torch.rand(5, n, generator=generator)
    share = area[0] + (area[1] - area[0]) * u[0]
    ratio = torch.exp(math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * u[1])
    eh = (share * h * w * ratio).sqrt().round().clamp(1, h)
    ew = (share * h * w / ratio).sqrt().round().clamp(1, w)
    top, left = ((h - eh + 1) * u[2]).floor(), ((w - ew + 1) * u[3]).floor()
    rows, cols = torch.arange(h).view(1, h), torch.arange(w).view(1, w)
    in_rows = (rows >= top.view(n, 1)) & (rows < (top + eh).view(n, 1))
    in_cols = (cols >= left.view(n, 1)) & (cols < (left + ew).view(n, 1))
    mask = ((u[4] < p).view(n, 1, 1) & in_rows.view(n, h, 1) & in_cols.view(n, 1, w)).unsqueeze(1)
    noise = (torch.randint(0, 256, x.shape, generator=generator, dtype=torch.uint8) if x.dtype == torch.uint8
             else torch.rand(x.shape, generator=generator).to(x.dtype))
    return torch.where(mask.to(x.device), noise.to(x.device), x)


def augment(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    flip: bool | torch.Tensor = True,
    crop: int = 2,
    degrees: float = 0.0,
    erase: float = 0.0,
) -> torch.Tensor:
    """Apply the enabled augmentations in a fixed order: crop, flip, rotate, erase. `flip`: True mirrors each
    image with probability 1/2, a boolean tensor (N,) the images it marks (drawing nothing)."""
    x = random_crop(x, crop, generator)
    if isinstance(flip, torch.Tensor):
        x = hflip(x, mask=flip)
    elif flip:
        x = hflip(x, 0.5, generator)
    return random_erase(rotate(x, degrees, generator), erase, generator)
