from __future__ import annotations

import pytest
import torch

from autorobust.data.augment import (
    BatchAugment,
    color_jitter,
    cutout,
    random_crop,
    random_grayscale,
    random_horizontal_flip,
)
from autorobust.errors import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ramp(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """Every pixel value is unique and positive: 1 + its flat position in one image."""
    one = torch.arange(1, c * h * w + 1, dtype=torch.float32).view(1, c, h, w)
    return one.repeat(b, 1, 1, 1)


def _translate(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img (C, H, W) moved down by dy and right by dx, zero-filled."""
    out = torch.zeros_like(img)
    _, h, w = img.shape
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@pytest.mark.parametrize("padding", [1, 3])
def test_random_crop_is_a_translation_of_at_most_padding_pixels(padding: int) -> None:
    b, c, h, w = 200, 2, 6, 7
    x = _ramp(b, c, h, w)
    out = random_crop(x, padding, _gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = set()
    for i in range(b):
        # The value at a kept pixel tells where it came from.
        ys, xs = torch.nonzero(out[i, 0], as_tuple=True)
        source = int(out[i, 0, ys[0], xs[0]]) - 1
        dy, dx = int(ys[0]) - source // w, int(xs[0]) - source % w
        assert abs(dy) <= padding and abs(dx) <= padding
        torch.testing.assert_close(out[i], _translate(x[i], dy, dx), rtol=0, atol=0)
        shifts.add((dy, dx))
    # All (2p + 1)^2 offsets occur in 200 samples, zero offset included: the image itself.
    assert len(shifts) == (2 * padding + 1) ** 2
    assert (0, 0) in shifts


def test_random_crop_zero_offset_reproduces_the_image() -> None:
    x = _ramp(50, 1, 5, 5)
    out = random_crop(x, 1, _gen(2))
    same = (out == x).flatten(1).all(dim=1)
    assert same.any()
    assert random_crop(x, 0, _gen(2)) is x


def test_flip_p1_is_torch_flip_and_p0_is_identity() -> None:
    x = torch.rand(4, 3, 5, 6, generator=_gen(0))
    torch.testing.assert_close(random_horizontal_flip(x, 1.0, _gen()), torch.flip(x, dims=[-1]))
    torch.testing.assert_close(random_horizontal_flip(x, 0.0, _gen()), x)
    mixed = random_horizontal_flip(x.repeat(50, 1, 1, 1), 0.5, _gen(3))
    flipped = (mixed == torch.flip(x.repeat(50, 1, 1, 1), dims=[-1])).flatten(1).all(dim=1)
    assert 50 < int(flipped.sum()) < 150


def test_grayscale_channels_are_equal_luma() -> None:
    x = torch.rand(6, 3, 4, 4, generator=_gen(0))
    out = random_grayscale(x, 1.0, _gen())
    torch.testing.assert_close(out[:, 0], out[:, 1])
    torch.testing.assert_close(out[:, 1], out[:, 2])
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[:, 0], expected)
    grey = torch.rand(3, 1, 4, 4, generator=_gen(1))
    assert random_grayscale(grey, 1.0, _gen()) is grey
    with pytest.raises(ValueError, match=r"C = 1 or 3 channels, got C = 2"):
        random_grayscale(torch.rand(1, 2, 3, 3), 0.5, _gen())


def test_color_jitter_factors_and_range() -> None:
    x = torch.full((8, 3, 4, 4), 0.5)
    bright = color_jitter(x, 0.4, 0.0, 0.0, _gen(0))
    # A constant image times a factor in [0.6, 1.4] stays constant per sample.
    values = bright.flatten(1)
    assert torch.all(values.max(dim=1).values == values.min(dim=1).values)
    assert torch.all((values >= 0.3 - 1e-6) & (values <= 0.7 + 1e-6))
    assert values[:, 0].unique().numel() == 8
    # Contrast and saturation leave a constant grey image unchanged.
    torch.testing.assert_close(color_jitter(x, 0.0, 0.5, 0.5, _gen(0)), x)
    rgb = torch.rand(16, 3, 5, 5, generator=_gen(1))
    out = color_jitter(rgb, 0.8, 0.8, 0.8, _gen(2))
    assert out.min() >= 0 and out.max() <= 1
    # Grey input: saturation is skipped but brightness and contrast apply.
    grey = torch.rand(4, 1, 5, 5, generator=_gen(3))
    assert color_jitter(grey, 0.0, 0.0, 0.9, _gen(0)).equal(grey)
    assert not color_jitter(grey, 0.5, 0.5, 0.0, _gen(0)).equal(grey)


def test_cutout_zeroes_one_clipped_square() -> None:
    size, h, w = 4, 12, 12
    x = torch.ones(300, 2, h, w)
    out = cutout(x, size, _gen(5))
    interior = 0
    for i in range(out.shape[0]):
        hole = out[i, 0] == 0
        torch.testing.assert_close(out[i, 1] == 0, hole)  # every channel
        ys, xs = torch.nonzero(hole, as_tuple=True)
        top, bottom = int(ys.min()), int(ys.max()) + 1
        left, right = int(xs.min()), int(xs.max()) + 1
        assert int(hole.sum()) == (bottom - top) * (right - left)  # a filled rectangle
        assert bottom - top <= size and right - left <= size
        if top > 0 and left > 0 and bottom < h and right < w:
            assert (bottom - top, right - left) == (size, size)
            interior += 1
    assert interior > 50


def test_cutout_odd_size_interior_is_full_square() -> None:
    out = cutout(torch.ones(400, 1, 15, 15), 5, _gen(0))
    counts = (out == 0).flatten(1).sum(dim=1)
    assert int(counts.max()) == 25
    assert cutout(out, 0, _gen()) is out


def test_batch_augment_off_is_identity_and_order_is_deterministic() -> None:
    x = torch.rand(5, 3, 8, 8, generator=_gen(0))
    off = BatchAugment()
    assert off(x, _gen()) is x
    assert not off.enabled
    aug = BatchAugment(crop_padding=2, hflip=True, grayscale_p=0.3, jitter=0.4, cutout=3)
    assert aug.enabled
    a, b = aug(x, _gen(9)), aug(x, _gen(9))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, aug(x, _gen(10)))
    assert a.shape == x.shape
    assert "crop_padding=2" in repr(aug)


@pytest.mark.parametrize("channels", [1, 3])
def test_no_op_makes_nans(channels: int) -> None:
    x = torch.rand(32, channels, 9, 9, generator=_gen(0))
    x[0] = 0.0  # a black image: contrast's mean is 0
    aug = BatchAugment(crop_padding=4, hflip=True, grayscale_p=0.5, jitter=0.9, cutout=20)
    out = aug(x, _gen(4))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    for op in (
        lambda t: random_crop(t, 3, _gen()),
        lambda t: random_horizontal_flip(t, 0.5, _gen()),
        lambda t: random_grayscale(t, 0.5, _gen()),
        lambda t: color_jitter(t, 1.0, 1.0, 1.0, _gen()),
        lambda t: cutout(t, 5, _gen()),
    ):
        assert torch.isfinite(op(x)).all()


def test_float64_and_generator_device_is_used() -> None:
    x = torch.rand(4, 1, 6, 6, dtype=torch.float64, generator=_gen(0))
    out = BatchAugment(crop_padding=1, hflip=True, cutout=2)(x, _gen(1))
    assert out.dtype == torch.float64 and out.device == x.device


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(crop_padding=-1), r"crop_padding must be a non-negative integer, got -1"),
        (dict(crop_padding=1.5), r"crop_padding must be a non-negative integer, got 1.5"),
        (dict(grayscale_p=1.5), r"grayscale_p must lie in \[0, 1\], got 1.5"),
        (dict(jitter=-0.1), r"jitter must be >= 0, got -0.1"),
        (dict(cutout=-2), r"cutout must be a non-negative integer, got -2"),
    ],
)
def test_batch_augment_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BatchAugment(**kwargs)


def test_function_errors() -> None:
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ConfigError, match=r"p must lie in \[0, 1\], got 2"):
        random_horizontal_flip(x, 2, _gen())
    with pytest.raises(ConfigError, match=r"contrast must be >= 0, got -1"):
        color_jitter(x, 0.0, -1, 0.0, _gen())
    with pytest.raises(ValueError, match=r"float tensor \(B, C, H, W\), got torch.uint8"):
        random_crop(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 1, _gen())
    with pytest.raises(
        ValueError, match=r"float tensor \(B, C, H, W\), got torch.float32 \(4, 4\)"
    ):
        cutout(torch.zeros(4, 4), 1, _gen())


def test_class_strength_augments_each_class_with_its_probability() -> None:
    n = 3000
    x = torch.rand(n, 1, 6, 6, generator=_gen(0)) + 0.1  # never black
    labels = torch.arange(n) % 3
    whole = dict(cutout=100)  # the square covers the image: an augmented sample is all zero
    aug = BatchAugment(**whole, class_strength=[0.0, 1.0, 0.3])
    out = aug(x, _gen(5), labels)
    blacked = (out == 0).flatten(1).all(1)
    assert not blacked[labels == 0].any()
    assert blacked[labels == 1].all()
    assert abs(blacked[labels == 2].float().mean().item() - 0.3) < 0.04
    unchanged = (out == x).flatten(1).all(1)
    assert bool((unchanged | blacked).all())  # a sample is either augmented or left as it was
    torch.testing.assert_close(aug(x, _gen(5), labels), out, rtol=0, atol=0)
    assert "class_strength=[0.0, 1.0" in repr(aug)


def test_class_strength_errors() -> None:
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ConfigError, match=r"class_strength must lie in \[0, 1\], got \[0.5, 1.5\]"):
        BatchAugment(cutout=2, class_strength=[0.5, 1.5])
    aug = BatchAugment(cutout=2, class_strength=[0.5, 1.0])
    with pytest.raises(ValueError, match=r"class_strength needs labels of shape \(2,\)"):
        aug(x, _gen())
    with pytest.raises(ConfigError, match="class_strength has 2 values, the data have 10 classes"):
        aug.check_classes(10)
    aug.check_classes(2)
