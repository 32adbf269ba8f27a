"""The MnasNet reward ACC*(C/T)^w and the proxy -> accuracy-like map."""
from __future__ import annotations

import math

import pytest

from nas.reward import B0_TOP1, CONSTRAINTS, IdentityMap, ProxyMap, Reward


def test_constraints_are_the_papers():
    # MnasNet (Tan et al. 2019, Sec. 3): soft alpha = beta = -0.07, hard alpha = 0, beta = -1
    assert CONSTRAINTS["soft"] == (-0.07, -0.07) and CONSTRAINTS["hard"] == (0.0, -1.0)
    assert set(CONSTRAINTS) == {"soft", "hard", "absolute"}


def test_absolute_reward_is_tunas():
    # TuNAS (Bender et al. 2020, Eq. 1): ACC + beta * |C/T - 1|, here beta = -0.1 (TuNAS's mobile value)
    r = Reward.make(400e6, "flops", "absolute", w=-0.1)
    assert r(0.8, 400e6) == pytest.approx(0.8)
    assert r(0.8, 440e6) == pytest.approx(0.79)  # +10 % of cost costs 0.1 * |beta|
    assert r(0.8, 360e6) == pytest.approx(0.79)  # and -10 % too: the target pulls from below
    assert r(0.8, 200e6) == pytest.approx(0.75)
    # unlike the soft reward, the target moves the argmax: of two nets the one nearer the target wins
    small, big = (0.80, 200e6), (0.80, 420e6)
    assert r(*big) > r(*small)
    assert Reward.make(200e6, "flops", "absolute", w=-0.1)(*small) > Reward.make(200e6, "flops", "absolute",
                                                                                  w=-0.1)(*big)


@pytest.mark.parametrize("w", [0.1, 0.0])
def test_absolute_reward_needs_a_penalty(w):
    with pytest.raises(ValueError, match="negative beta"):
        Reward.make(400e6, "flops", "absolute", w=w)


def test_soft_reward_values():
    r = Reward.make(400e6, "flops", "soft")
    assert r(0.8, 400e6) == pytest.approx(0.8)
    assert r(0.8, 800e6) == pytest.approx(0.8 * 2 ** -0.07)
    assert r(0.8, 200e6) == pytest.approx(0.8 * 0.5 ** -0.07)
    # the paper's reading: twice the cost needs ~5% more accuracy to break even
    assert r(0.8 / 2 ** -0.07, 800e6) == pytest.approx(r(0.8, 400e6))


def test_hard_reward_values():
    r = Reward.make(400e6, "flops", "hard")
    assert r(0.8, 100e6) == pytest.approx(0.8)  # no bonus below the target
    assert r(0.8, 400e6) == pytest.approx(0.8)
    assert r(0.8, 800e6) == pytest.approx(0.4)


def test_w_overrides_both_exponents():
    r = Reward.make(1.0, "latency", "hard", w=-0.2)
    assert (r.alpha, r.beta) == (-0.2, -0.2)
    assert r(0.5, 2.0) == pytest.approx(0.5 * 2 ** -0.2)


@pytest.mark.parametrize("bad", [dict(target=0), dict(target=-1), dict(target=float("nan")),
                                 dict(target=1, metric="params"), dict(target=1, constraint="medium")])
def test_bad_reward_arguments(bad):
    with pytest.raises(ValueError):
        Reward.make(**bad)


def test_cost_must_be_positive():
    with pytest.raises(ValueError):
        Reward.make(1.0)(0.5, 0.0)


def test_monotone_in_accuracy_and_cost():
    r = Reward.make(400e6)
    assert r(0.8, 300e6) > r(0.7, 300e6)
    assert r(0.8, 300e6) > r(0.8, 500e6)


def test_proxy_map_is_anchored_monotone_and_bounded():
    m = ProxyMap.fit(50.0, [40.0, 45.0, 50.0, 55.0, 60.0])
    assert m(50.0) == pytest.approx(B0_TOP1)
    assert m.scale == pytest.approx(math.sqrt(62.5))
    xs = [-1e6, -100, 0, 40, 49, 50, 51, 60, 1e3, 1e6]
    ys = [m(x) for x in xs]
    assert all(0 <= y <= 1 for y in ys) and ys == sorted(ys)
    assert m(50 + m.scale) == pytest.approx(1 / (1 + math.exp(-(math.log(B0_TOP1 / (1 - B0_TOP1)) + 1))))


def test_proxy_map_degenerate_inputs():
    assert ProxyMap.fit(1.0, [2.0, 2.0]).scale == 1.0  # no spread: unit scale, still monotone
    assert ProxyMap.fit(1.0, [float("nan"), 3.0]).scale == 1.0
    with pytest.raises(ValueError):
        ProxyMap(float("inf"), 1.0)
    with pytest.raises(ValueError):
        ProxyMap(0.0, 0.0)


def test_identity_map():
    assert IdentityMap()(0.42) == 0.42


def test_proxy_map_elasticity_at_the_reference_is_the_soft_exponent():
    # a proxy that grows by b per e-fold of cost: the map must trade like the soft reward at B0
    b, c_ref = 12.0, 4e8
    costs = [1e8, 2e8, 3e8, 5e8, 8e8]
    scores = [3.0 + b * math.log(c) for c in costs]
    s_ref = 3.0 + b * math.log(c_ref)
    m = ProxyMap.fit(s_ref, scores, costs)
    assert m.slope == pytest.approx(b)
    assert m.scale == pytest.approx((1 - B0_TOP1) * b / 0.07)
    h = 1e-4
    up, down = m(3.0 + b * math.log(c_ref * math.exp(h))), m(3.0 + b * math.log(c_ref * math.exp(-h)))
    assert (math.log(up) - math.log(down)) / (2 * h) == pytest.approx(0.07, rel=1e-3)
    # so the soft reward is stationary at the reference along the proxy's trend
    r = Reward.make(c_ref)
    f = lambda c: r(m(3.0 + b * math.log(c)), c)  # noqa: E731
    assert f(c_ref) >= max(f(c_ref * 1.5), f(c_ref / 1.5))


def test_proxy_map_falls_back_to_spread_when_the_proxy_does_not_grow_with_cost():
    m = ProxyMap.fit(0.0, [3.0, 2.0, 1.0], [1.0, 2.0, 3.0])
    assert m.scale == pytest.approx(1.0) and m.slope < 0
