"""Random crop with zero padding and horizontal flip (nas.augment), checked against a per-example loop."""
import torch

from nas.augment import augment_batch, default_pad


def _reference(x, offsets, flips, p):
    # the plain definition: pad, crop at (dy, dx), flip the crop
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    h, w = x.shape[-2:]
    out = []
    for i in range(x.shape[0]):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy:dy + h, dx:dx + w]
        out.append(crop.flip(-1) if flips[i] else crop)
    return torch.stack(out)


def test_matches_the_per_example_definition():
    # 3 channels and a non-square image, so that a swapped axis cannot pass
    x = torch.randn(17, 3, 12, 10)
    g = torch.Generator().manual_seed(5)
    got = augment_batch(x, g, pad=2)
    g = torch.Generator().manual_seed(5)
    offsets = torch.randint(0, 5, (17, 2), generator=g)
    flips = torch.rand(17, generator=g) < 0.5
    assert 0 < int(flips.sum()) < 17 and len({tuple(o.tolist()) for o in offsets}) > 3
    assert torch.equal(got, _reference(x, offsets, flips, 2))


def test_deterministic_with_the_generator_and_changes_the_batch():
    x = torch.randn(8, 1, 28, 28)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    c = augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, x)
    assert a.shape == x.shape


def test_zero_pad_without_flip_is_identity():
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=False), x)


def test_default_pad_is_cifars_4_at_32():
    assert default_pad(32) == 4 and default_pad(28) == 4 and default_pad(16) == 2
