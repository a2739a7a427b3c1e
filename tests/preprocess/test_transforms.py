import numpy as np
import pytest
import torch

from boneage.errors import InvalidInputError
from boneage.preprocess import (
    AugmentConfig,
    PreprocessConfig,
    augment_batch,
    normalize_intensity,
    preprocess_image,
    resize_image,
    to_grayscale,
)


def test_to_grayscale_luma_weights():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    gray = to_grayscale(rgb)
    np.testing.assert_allclose(gray, [[0.299 * 255, 0.587 * 255], [0.114 * 255, 0]], rtol=1e-5)
    assert to_grayscale(np.ones((3, 3, 4), np.uint8)).shape == (3, 3)


def test_minmax_normalisation_is_linear():
    image = np.arange(11, dtype=np.uint16).reshape(1, 11) * 1000
    np.testing.assert_allclose(normalize_intensity(image, "minmax"), np.arange(11).reshape(1, 11) / 10, atol=1e-6)


def test_percentile_normalisation_ignores_outliers():
    image = np.tile(np.linspace(0, 100, 1000, dtype=np.float32), (10, 1))
    image[0, 0] = 1e6  # a burnt-in marker
    out = normalize_intensity(image, "percentile", (1, 99))
    assert out.min() == 0.0 and out.max() == 1.0
    assert 0.45 < out[5, 500] < 0.55  # the middle stays in the middle despite the outlier
    assert np.all(normalize_intensity(np.full((4, 4), 3.0)) == 0)  # constant image


def test_resize_stretch_and_pad_closed_form():
    image = np.ones((20, 10), dtype=np.float32)
    stretched = resize_image(image, (8, 8), "stretch")
    assert stretched.shape == (8, 8) and np.allclose(stretched, 1)
    padded = resize_image(image, (8, 8), "pad")  # 20x10 -> 8x4 centred, 2 zero columns each side
    assert padded.shape == (8, 8)
    assert np.allclose(padded[:, 2:6], 1) and np.all(padded[:, :2] == 0) and np.all(padded[:, 6:] == 0)


def test_preprocess_image_shape_and_range():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(300, 200), dtype=np.uint16)
    out = preprocess_image(pixels, PreprocessConfig(image_size=(64, 48), resize="pad"))
    assert out.shape == (64, 48) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def test_config_round_trip_and_validation():
    config = PreprocessConfig(image_size=(96, 80), resize="pad", percentiles=(1, 99))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InvalidInputError, match="resize policy"):
        PreprocessConfig(resize="crop")


def test_augment_identity_and_seeded_reproducibility():
    x = torch.rand(4, 1, 16, 16)
    same = augment_batch(x, AugmentConfig.none(), torch.Generator().manual_seed(0))
    assert torch.allclose(same, x)
    config = AugmentConfig()
    a = augment_batch(x, config, torch.Generator().manual_seed(3))
    b = augment_batch(x, config, torch.Generator().manual_seed(3))
    c = augment_batch(x, config, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_augment_flip_only_equals_torch_flip():
    x = torch.rand(3, 1, 8, 8)
    config = AugmentConfig.none()
    config.hflip = 1.0
    out = augment_batch(x, config, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.flip(x, dims=[3]), atol=1e-5)


def test_rotation_by_90_degrees_on_a_non_square_image_is_a_rotation_not_a_shear():
    import math

    import torch.nn.functional as F

    from boneage.preprocess.augment import affine_theta

    x = torch.zeros(1, 1, 16, 32)
    x[0, 0, 7:9, 13:19] = 1.0  # horizontal bar: 6 px long, 2 px thick, centred
    one = torch.ones(1)
    theta = affine_theta(torch.tensor([math.pi / 2]), one, 0 * one, 0 * one, one, (16, 32))
    out = F.grid_sample(x, F.affine_grid(theta, [1, 1, 16, 32], align_corners=False), align_corners=False)[0, 0]
    rows, cols = torch.nonzero(out > 0.5, as_tuple=True)
    # a rotation keeps the lengths in pixels: now 6 px tall and 2 px wide (a shear gives 3 x 4)
    assert int(rows.max() - rows.min()) + 1 == 6 and int(cols.max() - cols.min()) + 1 == 2


def test_transform_points_follows_the_augmentation_warp():
    """A bright dot lands where transform_points says, with flips, rotation, zoom, shift, non-square."""
    import torch

    from boneage.preprocess import AugmentConfig, augment_batch, transform_points

    height, width = 60, 80
    points = torch.tensor([[[20.5, 10.5]], [[60.5, 40.5]], [[30.5, 30.5]], [[70.5, 15.5]]])
    images = torch.zeros(4, 1, height, width)
    for i in range(4):
        x, y = (int(v) for v in points[i, 0])
        images[i, 0, y - 1 : y + 2, x - 1 : x + 2] = 1.0
    config = AugmentConfig(hflip=0.5, rotation_deg=30, scale=(0.8, 1.2), translate=0.1, contrast=0, brightness=0, gamma=0)
    out, theta = augment_batch(images, config, torch.Generator().manual_seed(3), return_theta=True)
    moved = transform_points(points, theta, (height, width))
    yy, xx = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    for i in range(4):
        mass = out[i, 0]
        centroid = torch.stack([(mass * xx).sum() / mass.sum(), (mass * yy).sum() / mass.sum()])
        assert torch.allclose(moved[i, 0], centroid, atol=0.1), (moved[i, 0], centroid)
    assert (theta[:, 0, 0] < 0).any() and (theta[:, 0, 0] > 0).any()  # both flipped and unflipped cases ran


def _acquisition_only(**options) -> AugmentConfig:
    config = AugmentConfig.none()
    for key, value in options.items():
        setattr(config, key, value)
    return config


def test_acquisition_augmentations_are_off_by_default_and_draw_nothing_then():
    """Older recipes draw exactly as they did: the same generator state after a batch with the defaults."""
    x = torch.rand(4, 1, 16, 16)
    first, second = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment_batch(x, AugmentConfig(), first)
    augment_batch(x, AugmentConfig(**{**AugmentConfig().to_dict(), "blur": 0.0, "noise": 0.0}), second)
    assert torch.equal(first.get_state(), second.get_state())
    assert AugmentConfig().resample == AugmentConfig().blur == AugmentConfig().noise == AugmentConfig().jpeg == 0


def test_acquisition_augmentations_do_what_they_say():
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    board = (((yy // 2) + (xx // 2)) % 2).float()[None, None].repeat(6, 1, 1, 1)  # 2 px checkerboard
    flat = torch.full((6, 1, 32, 32), 0.5)
    blurred = augment_batch(board, _acquisition_only(blur=2.0), torch.Generator().manual_seed(0))
    assert blurred.std(dim=(1, 2, 3)).min() < 0.3 < board.std()  # some images blurred a lot (SD up to 2 px)
    torch.testing.assert_close(blurred.mean(), board.mean(), atol=0.02, rtol=0)  # a blur keeps the mean
    noisy = augment_batch(flat, _acquisition_only(noise=0.1), torch.Generator().manual_seed(0))
    sd = (noisy - flat).std(dim=(1, 2, 3))
    assert 0.0 <= sd.min() and sd.max() <= 0.12 and sd.max() > 0.03
    resampled = augment_batch(board, _acquisition_only(resample=1.0), torch.Generator().manual_seed(0))
    assert resampled.shape == board.shape and not torch.allclose(resampled, board)  # every image lost its fine detail
    assert ((resampled - board).abs().mean(dim=(1, 2, 3)) > 0.1).all()
    smooth = augment_batch(board, _acquisition_only(blur=1.5), torch.Generator().manual_seed(1))
    compressed = augment_batch(smooth, _acquisition_only(jpeg=1.0), torch.Generator().manual_seed(0))
    change = (compressed - smooth).abs().mean(dim=(1, 2, 3))
    assert (change > 0.001).all() and (change < 0.2).all()  # artefacts, not another image
    untouched = augment_batch(board, _acquisition_only(jpeg=0.0001, resample=0.0001), torch.Generator().manual_seed(0))
    assert torch.equal(untouched, board)  # chosen with (almost) no probability: left as they were
