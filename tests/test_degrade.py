"""The training augmentations of modelprint.io.degrade: the robust policy is deterministic by seed, applies each of
its operations as traced, and keeps shapes; the named policies."""

from __future__ import annotations

import numpy as np
import pytest

from modelprint.io.degrade import (
    AUGMENTATIONS,
    KERNELS,
    RobustDegrade,
    blur,
    get_augmentation,
    jpeg,
    random_degrade,
    resize,
)

OFF = dict(p_crop=0.0, p_resize=0.0, p_blur=0.0, p_noise=0.0, p_jpeg=0.0, p_double=0.0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    yy, xx = np.mgrid[:80, :80]
    smooth = np.stack([yy * 3, xx * 3, (yy + xx) * 1.5], -1)
    return np.clip(smooth + np.random.default_rng(0).normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def run(policy: RobustDegrade, image: np.ndarray, seed: int, out_size: int = 1000) -> tuple[np.ndarray, list]:
    trace: list = []
    return policy(image, np.random.default_rng(seed), out_size=out_size, trace=trace), trace


def test_robust_policy_is_deterministic_by_seed(image: np.ndarray) -> None:
    a, ta = run(RobustDegrade(), image, 3, out_size=64)
    b, tb = run(RobustDegrade(), image, 3, out_size=64)
    np.testing.assert_array_equal(a, b)
    assert ta == tb
    others = [run(RobustDegrade(), image, s, out_size=64) for s in range(4, 12)]
    assert any(o.shape != a.shape or not np.array_equal(o, a) for o, _ in others)


def test_robust_policy_shapes(image: np.ndarray) -> None:
    sides = set()
    for seed in range(40):
        out, trace = run(RobustDegrade(), image, seed, out_size=64)
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.shape[0] == out.shape[1]
        assert 32 <= out.shape[0] <= 64
        sides.add(out.shape[0])
    assert 64 in sides and min(sides) < 64  # a downscale is not undone
    out, trace = run(RobustDegrade(**OFF), image, 0, out_size=48)  # nothing applied: a crop of the input
    assert trace == [] and out.shape == (48, 48, 3)
    assert any(np.array_equal(out, image[y : y + 48, x : x + 48]) for y in range(33) for x in range(33))


@pytest.mark.parametrize("op", ["crop", "resize", "blur", "noise", "jpeg", "double"])
def test_each_robust_operation_is_applied_as_traced(image: np.ndarray, op: str) -> None:
    on = {"double": dict(p_jpeg=1.0, p_double=1.0)}.get(op, {f"p_{op}": 1.0})
    for seed in range(3):
        out, trace = run(RobustDegrade(**{**OFF, **on}), image, seed)  # out_size 1000: the final crop keeps it all
        ops = [name for name, _ in trace if name != "upscale"]
        assert ops == {"double": ["jpeg", "jpeg"]}.get(op, [op])
        p = trace[0][1]
        if op == "crop":
            s = p["side"]
            assert out.shape == (s, s, 3) and s < 80
            assert any(np.array_equal(out, image[y : y + s, x : x + s]) for y in range(81 - s) for x in range(81 - s))
        elif op == "resize":
            assert p["kernel"] in KERNELS and 0.25 <= p["scale"] <= 2.0
            expected = resize(image, p["scale"], p["kernel"])
            if min(expected.shape[:2]) < 32:
                expected = resize(expected, 32 / min(expected.shape[:2]))
            np.testing.assert_array_equal(out, expected)
        elif op == "blur":
            np.testing.assert_array_equal(out, blur(image, p["sigma"]))
            assert not np.array_equal(out, image)
        elif op == "noise":
            diff = out.astype(np.float64) - image
            assert 0.3 * p["sigma"] < diff.std() < 1.5 * p["sigma"] + 0.5
        elif op == "jpeg":
            assert 30 <= p["quality"] <= 100
            np.testing.assert_array_equal(out, jpeg(image, p["quality"]))
        else:
            second = trace[1][1]
            expected = jpeg(jpeg(image, p["quality"])[second["shift"] :, second["shift"] :], second["quality"])
            np.testing.assert_array_equal(out, expected)


def test_named_policies(image: np.ndarray) -> None:
    assert set(AUGMENTATIONS) == {"none", "standard", "robust", "mixed"}
    with pytest.raises(ValueError, match="unknown augmentation 'heavy'.*robust"):
        get_augmentation("heavy")
    assert [get_augmentation(n).input_side(128) for n in AUGMENTATIONS] == [160] * len(AUGMENTATIONS)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(get_augmentation("standard")(image, rng_a, out_size=64),
                                  random_degrade(image, rng_b, out_size=64))
    assert get_augmentation("none")(image, rng_a, out_size=64).shape == (64, 64, 3)


def test_mixed_policy_draws_each_half_and_is_seeded(image: np.ndarray) -> None:
    mixed = get_augmentation("mixed")
    outs = [mixed(image, np.random.default_rng(s), out_size=64) for s in range(40)]
    again = [mixed(image, np.random.default_rng(s), out_size=64) for s in range(40)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, again, strict=True))
    standard = [np.array_equal(o, random_degrade(image, _after_pick(s), out_size=64)) for s, o in enumerate(outs)]
    assert 8 < sum(standard) < 32  # about half from the standard policy, the rest from the robust one
    robust = [not st and np.array_equal(o, RobustDegrade()(image, _after_pick(s), out_size=64))
              for s, (o, st) in enumerate(zip(outs, standard, strict=True))]
    assert sum(standard) + sum(robust) == len(outs)


def _after_pick(seed: int) -> np.random.Generator:
    """The generator of seed ``seed`` after the mixed policy's draw of a component."""
    rng = np.random.default_rng(seed)
    rng.choice(2, p=[0.5, 0.5])
    return rng


def test_cli_offers_every_named_policy() -> None:
    from modelprint.cli.train import _AUGMENTATIONS

    assert set(_AUGMENTATIONS) == set(AUGMENTATIONS)  # the CLI's list is kept apart for a fast --help
