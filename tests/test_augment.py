"""Batched augmentation: shapes and dtypes kept, seeded, and doing what each name says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fmlab.data.augment import augment, hflip, random_crop, random_erase, rotate


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(dtype: torch.dtype, n: int = 32) -> torch.Tensor:
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=_gen(99), dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255.0


FUNCTIONS = {
    "hflip": lambda x, g: hflip(x, 0.5, g),
    "crop": lambda x, g: random_crop(x, 3, g),
    "rotate": lambda x, g: rotate(x, 15.0, g),
    "erase": lambda x, g: random_erase(x, 0.5, g),
    "augment": lambda x, g: augment(x, g, flip=True, crop=2, degrees=10.0, erase=0.5),
}
DTYPES = [torch.uint8, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_shape_and_dtype_kept(name, dtype):
    x = _batch(dtype)
    out = FUNCTIONS[name](x, _gen(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    if dtype != torch.uint8:
        assert out.min() >= 0.0 and out.max() <= 1.0 + 1e-6
    # multi-channel batches too
    x3 = x.repeat(1, 3, 1, 1)
    assert FUNCTIONS[name](x3, _gen(0)).shape == x3.shape


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32], ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_seeded(name, dtype):
    x = _batch(dtype)
    a, b, c = (FUNCTIONS[name](x, _gen(seed)) for seed in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)  # it did something


@pytest.mark.parametrize("name", FUNCTIONS)
def test_input_not_modified(name):
    x = _batch(torch.uint8)
    before = x.clone()
    FUNCTIONS[name](x, _gen(0))
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_batch_without_channel_axis_is_refused(name):
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        FUNCTIONS[name](_batch(torch.uint8)[:, 0], _gen(0))


def test_hflip_probabilities():
    x = _batch(torch.uint8)
    assert torch.equal(hflip(x, p=1.0, generator=_gen(0)), x.flip(-1))
    assert torch.equal(hflip(x, p=0.0, generator=_gen(0)), x)
    out = hflip(x, p=0.5, generator=_gen(0))
    flipped = [torch.equal(o, f) for o, f in zip(out, x.flip(-1), strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each image: one or the other
    assert 4 <= sum(flipped) <= 28  # about half of 32


def test_a_flip_mask_mirrors_exactly_the_marked_images_and_draws_nothing():
    x = _batch(torch.uint8, n=8)
    mask = torch.tensor([True, False, False, True, True, False, True, False])
    out = hflip(x, mask=mask)
    assert torch.equal(out[mask], x[mask].flip(-1)) and torch.equal(out[~mask], x[~mask])
    g = _gen(5)
    expected = random_erase(hflip(random_crop(x, 2, g), mask=mask), 0.5, g)  # the erase draws follow the crop's
    assert torch.equal(augment(x, _gen(5), flip=mask, crop=2, erase=0.5), expected)


def test_crop_with_padding_zero_is_identity():
    x = _batch(torch.uint8)
    assert torch.equal(random_crop(x, 0, _gen(0)), x)


def test_crop_moves_a_single_bright_pixel_by_at_most_padding():
    pad = 3
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, 14, 10] = 255
    out = random_crop(x, pad, _gen(0))
    shifts = set()
    for image in out[:, 0]:
        assert int((image > 0).sum()) == 1 and int(image.max()) == 255  # one pixel, intact
        r, c = (int(v) for v in (image == 255).nonzero()[0])
        assert abs(r - 14) <= pad and abs(c - 10) <= pad
        shifts.add((r - 14, c - 10))
    assert len(shifts) > 10  # the window moves, independently per image


def _shift(image: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """The window of `image` zero-padded by `pad`, moved by (dy, dx) from the centre."""
    h, w = image.shape[-2:]
    padded = F.pad(image, (pad,) * 4)
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32], ids=str)
def test_crop_is_a_shifted_window(dtype):
    pad = 2
    x = _batch(dtype, 16).repeat(1, 2, 1, 1)  # two channels: the same shift for both
    x[:, 1] = x[:, 1].flip(-1)
    out = random_crop(x, pad, _gen(3))
    for image, result in zip(x, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-pad, pad + 1)
            for dx in range(-pad, pad + 1)
            if torch.equal(_shift(image, dy, dx, pad), result)
        ]
        assert len(matches) == 1


def _bar() -> torch.Tensor:
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # an off-axis-symmetric bar, well inside the frame
    return x


def test_rotate_small_angle_keeps_mass():
    x = _bar()
    out = rotate(x, 10.0, _gen(0))
    mass_in, mass_out = x.sum((1, 2, 3)), out.sum((1, 2, 3))
    assert torch.allclose(mass_out, mass_in, rtol=0.05)
    assert not torch.allclose(out, x, atol=0.1)  # but the pixels moved


def test_rotate_near_zero_angle_is_identity():
    x = _bar()
    assert torch.allclose(rotate(x, 1e-6, _gen(0)), x, atol=1e-4)
    assert torch.equal(rotate(x, 0.0, _gen(0)), x)


def test_rotate_uint8_rounds_and_stays_in_range():
    x = (_bar() * 255).to(torch.uint8)
    out = rotate(x, 10.0, _gen(0))
    ref = rotate(x.float(), 10.0, _gen(0))
    assert torch.equal(out, ref.round().clamp(0, 255).to(torch.uint8))


def test_augment_order_and_switches():
    x = _batch(torch.uint8)
    assert torch.equal(augment(x, _gen(0), flip=False, crop=0, degrees=0.0), x)
    # crop, then flip, then rotate, then erase, all from the one generator in that order
    g = _gen(5)
    expected = random_erase(rotate(hflip(random_crop(x, 2, g), 0.5, g), 5.0, g), 0.5, g)
    assert torch.equal(augment(x, _gen(5), flip=True, crop=2, degrees=5.0, erase=0.5), expected)


def test_erase_fills_one_rectangle_of_the_drawn_size_with_random_pixels():
    n = 2000
    x = torch.full((n, 2, 28, 28), 0.5)
    out = random_erase(x, 1.0, _gen(0))
    assert torch.equal(random_erase(x, 0.0, _gen(0)), x)
    changed = out != x
    assert torch.equal(changed[:, 0], changed[:, 1])  # one rectangle across the channels, own noise in each
    assert not torch.equal(out[:, 0], out[:, 1])
    shares, ratios = [], []
    for mask in changed[:, 0]:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        h, w = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
        assert int(mask.sum()) == h * w  # the changed pixels fill their bounding box
        shares.append(h * w / 784)
        ratios.append(h / w)
    shares_t, ratios_t = torch.tensor(shares), torch.tensor(ratios)
    # area uniform in 2-40% (rounded to whole pixels; tall or wide ones are cut at the frame)
    assert shares_t.min() >= 0.01 and shares_t.max() <= 0.45
    assert 0.17 < float(shares_t.mean()) < 0.23
    # height/width log-uniform in 0.3-3.3: symmetric about 1 on a log scale
    assert abs(float(ratios_t.log().mean())) < 0.1 and ratios_t.min() < 0.5 and ratios_t.max() > 2
    filled = out[changed]
    assert 0.45 < float(filled.mean()) < 0.55 and float(filled.std()) > 0.25  # uniform noise, not a constant


def test_erase_rate_and_uint8_noise():
    x = torch.zeros(2000, 1, 28, 28, dtype=torch.uint8)
    out = random_erase(x, 0.3, _gen(1))
    erased = (out != x).flatten(1).any(1).float()
    assert 0.26 < float(erased.mean()) < 0.34
    assert out.dtype == torch.uint8 and int(out.max()) == 255 and 120 < float(out[out > 0].float().mean()) < 135
