"""RandAugment as batched tensor ops (nas.randaugment), each op against a direct reference on small images.

The expected values restate torchvision's definitions (torchvision 0.2x,
``torchvision/transforms/v2/_auto_augment.py``: ``RandAugment._AUGMENTATION_SPACE`` and
``_AutoAugmentBase._apply_image_or_video_transform``; kernels in
``torchvision/transforms/v2/functional/_color.py`` and ``_geometry.py``).
"""
import math

import pytest
import torch

from nas.randaugment import OP_NAMES, apply_op, augmentation_space, rand_augment


def _dot(h, w, r, c, value=1.0, channels=1):
    x = torch.zeros(1, channels, h, w)
    x[..., r, c] = value
    return x


def _where(x):
    return [tuple(p) for p in (x[0, 0] > 0.5).nonzero().tolist()]


# --- the op table -----------------------------------------------------------------------------

def test_op_order_is_torchvision_randaugment():
    # torchvision/transforms/v2/_auto_augment.py, RandAugment._AUGMENTATION_SPACE (keys in order)
    assert OP_NAMES == ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
                        "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
    assert tuple(augmentation_space(31, 20, 28)) == OP_NAMES


def test_magnitude_tables_equal_torchvision_at_31_bins():
    # torchvision/transforms/v2/_auto_augment.py, RandAugment._AUGMENTATION_SPACE (same as the v1
    # RandAugment._augmentation_space in torchvision/transforms/autoaugment.py), num_bins = 31, H = 20, W = 28:
    #   ShearX/Y linspace(0, 0.3), TranslateX linspace(0, 150/331 * W), TranslateY linspace(0, 150/331 * H),
    #   Rotate linspace(0, 30), Brightness/Color/Contrast/Sharpness linspace(0, 0.9),
    #   Posterize 8 - (arange(31) / ((31 - 1) / 4)).round().int(), Solarize linspace(1.0, 0.0)
    space = augmentation_space(31, 20, 28)
    i = torch.arange(31, dtype=torch.float64)
    expected = {
        "ShearX": (0.3 * i / 30, True), "ShearY": (0.3 * i / 30, True),
        "TranslateX": (150 / 331 * 28 * i / 30, True), "TranslateY": (150 / 331 * 20 * i / 30, True),
        "Rotate": (i, True),
        "Brightness": (0.03 * i, True), "Color": (0.03 * i, True),
        "Contrast": (0.03 * i, True), "Sharpness": (0.03 * i, True),
        "Solarize": (1.0 - i / 30, False),
    }
    for name, (values, signed) in expected.items():
        got, got_signed = space[name]
        assert got_signed == signed, name
        assert torch.allclose(got.double(), values, atol=1e-5), name
    posterize, signed = space["Posterize"]
    assert not signed
    assert posterize.tolist() == [8, 8, 8, 8, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6,
                                  6, 6, 6, 5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4]
    for name in ("Identity", "AutoContrast", "Equalize"):
        assert space[name] == (None, False)
    # the default magnitude 9: shear 0.09, 3.8 px at W = 28, 9 degrees, factor 1 +- 0.27, 7 bits, threshold 0.7
    assert space["ShearX"][0][9].item() == pytest.approx(0.09)
    assert space["TranslateX"][0][9].item() == pytest.approx(3.8066, abs=1e-4)
    assert space["Solarize"][0][9].item() == pytest.approx(0.7)


# --- colour ops -------------------------------------------------------------------------------

def test_brightness_scales_pixels_and_clamps():
    x = torch.tensor([0.0, 0.25, 0.5, 0.9]).view(1, 1, 2, 2)
    assert torch.allclose(apply_op(x, "Brightness", 0.27), (x * 1.27).clamp(max=1.0))
    assert torch.allclose(apply_op(x, "Brightness", -0.27), x * 0.73)
    assert apply_op(x, "Brightness", 0.27)[0, 0, 1, 1] == 1.0


def test_solarize_inverts_values_at_or_above_the_threshold():
    x = torch.tensor([0.1, 0.69, 0.7, 0.95]).view(1, 1, 2, 2)
    got = apply_op(x, "Solarize", 0.7)
    assert torch.allclose(got.flatten(), torch.tensor([0.1, 0.69, 1 - 0.7, 1 - 0.95]))
    assert torch.equal(apply_op(x, "Solarize", 1.0), x)


def test_posterize_7_bits():
    # torchvision's float kernel: floor(x * 2^bits) / 2^bits, levels clamped to 2^bits - 1
    x = torch.tensor([0.0, 0.5 + 1 / 512, 0.3, 1.0]).view(1, 1, 2, 2)
    got = apply_op(x, "Posterize", 7).flatten()
    assert torch.allclose(got, torch.tensor([0.0, 0.5, math.floor(0.3 * 128) / 128, 127 / 128]))
    assert torch.allclose(apply_op(x, "Posterize", 4).flatten()[3], torch.tensor(15 / 16))


def test_contrast_of_a_constant_image_is_unchanged_and_factor_zero_gives_the_mean():
    grey = torch.full((1, 1, 4, 4), 0.37)
    for m in (-0.9, 0.27, 0.9):
        assert torch.allclose(apply_op(grey, "Contrast", m), grey)
        # RGB: torchvision's grey weights sum to 0.9999, so a constant colour image moves by 1e-4 of its value
        rgb = torch.full((1, 3, 4, 4), 0.6)
        assert torch.allclose(apply_op(rgb, "Contrast", m), (1 + m) * rgb - m * 0.9999 * rgb)
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert torch.allclose(apply_op(x, "Contrast", -1.0), torch.full_like(x, 0.5))
    assert torch.allclose(apply_op(x, "Contrast", 0.5), torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 2, 2))
    # RGB: blended with the mean of the greyscale image 0.2989 R + 0.587 G + 0.114 B
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    assert torch.allclose(apply_op(red, "Contrast", -0.5)[0, :, 0, 0], torch.tensor([0.5 + 0.5 * 0.2989,
                                                                                      0.5 * 0.2989, 0.5 * 0.2989]))


def test_color_blends_with_greyscale_and_leaves_grey_images():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    assert torch.allclose(apply_op(red, "Color", -1.0), torch.full_like(red, 0.2989))
    assert torch.allclose(apply_op(red, "Color", -0.5)[0, :, 0, 0], torch.tensor([0.5 + 0.5 * 0.2989,
                                                                                  0.5 * 0.2989, 0.5 * 0.2989]))
    x = torch.rand(3, 1, 5, 5)
    assert torch.equal(apply_op(x, "Color", 0.9), x)


def test_sharpness_blends_with_the_3x3_smoothing_and_keeps_the_border():
    x = _dot(5, 5, 2, 2)
    x[0, 0, 0, 0] = 1.0  # a border pixel: kept, but it feeds its interior neighbour
    got = apply_op(x, "Sharpness", -1.0)[0, 0]  # factor 0: the smoothed image inside
    expected = torch.zeros(5, 5)
    expected[1:4, 1:4] = 1 / 13
    expected[2, 2] = 5 / 13
    expected[1, 1] += 1 / 13
    expected[0, 0] = 1.0
    assert torch.allclose(got, expected)
    # factor 1 + m: x + (1 - f) (blur - x), clamped
    assert torch.allclose(apply_op(x, "Sharpness", 0.5)[0, 0], (1.5 * x[0, 0] - 0.5 * expected).clamp(0, 1))
    flat = torch.full((1, 3, 6, 6), 0.4)
    assert torch.allclose(apply_op(flat, "Sharpness", 0.9), flat)


def test_autocontrast_stretches_each_channel_and_keeps_constant_ones():
    x = torch.tensor([0.2, 0.3, 0.5, 0.6]).view(1, 1, 2, 2)
    assert torch.allclose(apply_op(x, "AutoContrast", 0.0), (x - 0.2) / 0.4)
    rgb = torch.stack([x[0, 0], torch.full((2, 2), 0.5), x[0, 0] * 0.5 + 0.1])[None]
    got = apply_op(rgb, "AutoContrast", 0.0)[0]
    assert torch.allclose(got[0], (x[0, 0] - 0.2) / 0.4)
    assert torch.equal(got[1], rgb[0, 1])
    assert got[2].min() == 0.0 and torch.allclose(got[2].max(), torch.tensor(1.0))


def test_equalize_of_a_two_level_image():
    # 28 x 28 px, half at 0.2 (uint8 51), half at 0.6 (uint8 153): PIL's LUT step = 392 // 255 = 1,
    # lut[51] = cum[50] = 0 and lut[153] = min(cum[152], 255) = 255
    x = torch.full((1, 1, 28, 28), 0.2)
    x[..., 14:, :] = 0.6
    got = apply_op(x, "Equalize", 0.0)
    assert torch.equal(got, (x > 0.5).float())
    # too few pixels below the maximum (step 0): returned as is, after uint8 quantisation (x * (256 - 1e-3))
    small = x[..., 10:18, :8]
    assert torch.allclose(apply_op(small, "Equalize", 0.0), (small * 255.999).floor() / 255)
    # per channel: a constant channel stays (quantised), the two-level one is equalised
    rgb = torch.cat([x, torch.full_like(x, 0.5), x], dim=1)
    got = apply_op(rgb, "Equalize", 0.0)[0]
    assert torch.equal(got[0], got[2]) and torch.equal(got[0], (x[0, 0] > 0.5).float())
    assert torch.allclose(got[1], torch.full_like(got[1], 127 / 255))


# --- geometric ops ----------------------------------------------------------------------------

def test_translate_moves_content_right_and_down_by_whole_pixels():
    x = _dot(9, 9, 4, 4)
    assert _where(apply_op(x, "TranslateX", 3.0)) == [(4, 7)]
    assert _where(apply_op(x, "TranslateX", -3.0)) == [(4, 1)]
    assert _where(apply_op(x, "TranslateX", 3.9)) == [(4, 7)]  # torchvision: translate=[int(magnitude), 0]
    assert _where(apply_op(x, "TranslateY", 2.0)) == [(6, 4)]
    assert _where(apply_op(x, "TranslateY", -2.5)) == [(2, 4)]


def test_translate_fills_the_vacated_area():
    x = torch.rand(2, 3, 6, 7)
    out = apply_op(x, "TranslateX", 2.0, fill=0.25)
    assert torch.equal(out[..., 2:], x[..., :-2])
    assert torch.all(out[..., :2] == 0.25)
    assert torch.all(apply_op(x, "TranslateY", -4.0)[..., 2:, :] == 0.0)


@pytest.mark.parametrize("size", [(6, 6), (5, 5)])
def test_rotate_90_is_counter_clockwise_about_the_centre(size):
    # torchvision's F.rotate: positive angles rotate counter-clockwise, i.e. like torch.rot90(k=1)
    x = torch.rand(2, 3, *size)
    assert torch.equal(apply_op(x, "Rotate", 90.0), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(apply_op(x, "Rotate", -90.0), torch.rot90(x, -1, dims=(2, 3)))
    # a pixel right of the centre goes up
    h, w = size
    assert _where(apply_op(_dot(h, w, h // 2, w - 1), "Rotate", 90.0)) == [(0, h // 2)]


def test_shear_x_shifts_each_row_by_m_times_its_distance_to_the_top_edge():
    # torchvision: F.affine(shear=[degrees(atan(m)), 0], center=[0, 0]); output (x, y) reads input
    # (x + m (y + 1/2), y), so the top row stays and a positive m moves lower rows left
    x = torch.zeros(1, 1, 8, 8)
    x[..., :, 5] = 1.0
    got = apply_op(x, "ShearX", 0.3)[0, 0]
    for y in range(8):
        shift = round(0.3 * (y + 0.5))
        assert got[y].nonzero().flatten().tolist() == [5 - shift], y
    assert torch.equal(apply_op(x, "ShearX", 0.3)[0, 0, 0], x[0, 0, 0])
    got = apply_op(x, "ShearX", -0.3)[0, 0]
    assert [row.nonzero().flatten().tolist() for row in got] == [[5 + round(0.3 * (y + 0.5))] for y in range(8)]


def test_shear_y_shifts_each_column_by_m_times_its_distance_to_the_left_edge():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2, :] = 1.0
    got = apply_op(x, "ShearY", -0.3)[0, 0]
    for c in range(8):
        assert got[:, c].nonzero().flatten().tolist() == [2 + round(0.3 * (c + 0.5))], c


# --- rand_augment -----------------------------------------------------------------------------

def test_rand_augment_is_the_per_image_sequence_of_its_draws():
    # op indices (N, num_ops) and then signs (torchvision: negated when rand <= 0.5) from the generator
    x = torch.rand(24, 3, 10, 12)
    got = rand_augment(x, torch.Generator().manual_seed(7), num_ops=3, magnitude=20)
    g = torch.Generator().manual_seed(7)
    ops = torch.randint(14, (24, 3), generator=g)
    negative = torch.rand((24, 3), generator=g) <= 0.5
    space = augmentation_space(31, 10, 12)
    assert len(set(ops.flatten().tolist())) > 10
    for i in range(24):
        img = x[i:i + 1]
        for s in range(3):
            values, signed = space[OP_NAMES[ops[i, s]]]
            m = float(values[20]) if values is not None else 0.0
            img = apply_op(img, OP_NAMES[ops[i, s]], -m if signed and negative[i, s] else m)
        assert torch.equal(got[i:i + 1], img), i


def test_deterministic_with_the_generator_and_leaves_the_global_rng():
    x = torch.rand(16, 1, 28, 28)
    state = torch.get_rng_state()
    a = rand_augment(x, torch.Generator().manual_seed(0))
    b = rand_augment(x, torch.Generator().manual_seed(0))
    c = rand_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_range_and_input_untouched(channels, dtype):
    x = torch.rand(32, channels, 11, 9, dtype=dtype)
    before = x.clone()
    out = rand_augment(x, torch.Generator().manual_seed(3), num_ops=4, magnitude=30, fill=0.5)
    assert out.shape == x.shape and out.dtype == dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(x, before)


def test_num_ops_zero_returns_an_unchanged_copy():
    x = torch.rand(4, 3, 8, 8)
    out = rand_augment(x, torch.Generator().manual_seed(0), num_ops=0)
    assert torch.equal(out, x) and out is not x


@pytest.mark.parametrize("kwargs, x", [
    (dict(num_ops=-1), torch.rand(2, 1, 8, 8)),
    (dict(magnitude=31), torch.rand(2, 1, 8, 8)),
    (dict(magnitude=-1), torch.rand(2, 1, 8, 8)),
    (dict(magnitude=2.5), torch.rand(2, 1, 8, 8)),
    (dict(num_magnitude_bins=1, magnitude=0), torch.rand(2, 1, 8, 8)),
    (dict(fill=1.5), torch.rand(2, 1, 8, 8)),
    (dict(), torch.rand(1, 8, 8)),
    (dict(), torch.rand(2, 2, 8, 8)),
    (dict(), torch.zeros(2, 3, 8, 8, dtype=torch.uint8)),
])
def test_bad_arguments_raise(kwargs, x):
    with pytest.raises(ValueError):
        rand_augment(x, torch.Generator().manual_seed(0), **kwargs)


def test_apply_op_rejects_unknown_ops_and_wrong_magnitude_counts():
    x = torch.rand(3, 1, 8, 8)
    with pytest.raises(ValueError):
        apply_op(x, "Invert", 0.0)
    with pytest.raises(ValueError):
        apply_op(x, "Rotate", torch.tensor([1.0, 2.0]))
    per_image = apply_op(x, "TranslateX", torch.tensor([1.0, 0.0, -1.0]))
    assert torch.equal(per_image[1], x[1]) and torch.equal(per_image[0, :, :, 1:], x[0, :, :, :-1])
