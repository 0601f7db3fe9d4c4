"""Tests of mmie.edits.leace: LEACE fitter and eraser against the concept-erasure oracle."""

from __future__ import annotations

import itertools
import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmie.edits.leace import LeaceEraser, LeaceFitter
from mmie.errors import CheckpointError

concept_erasure = pytest.importorskip("concept_erasure")


def make_data(
    seed: int,
    n: int = 600,
    d: int = 12,
    k: int = 2,
    *,
    priors: list[float] | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated Gaussian features whose class means differ; labels drawn with ``priors``."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.tensor(priors if priors is not None else [1.0 / k] * k, dtype=torch.float64)
    z = torch.multinomial(probs, n, replacement=True, generator=g)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    centres = 1.5 * torch.randn(k, d, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + centres[z] + 0.3
    return x.to(dtype), z


def one_hot(z: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(z, k).to(torch.float64)


def cross_cov(x: torch.Tensor, zf: torch.Tensor) -> torch.Tensor:
    """Sample cross-covariance, computed directly (independent of the fitter)."""
    xc = x - x.mean(0)
    zc = zf - zf.mean(0)
    return xc.T @ zc / (x.shape[0] - 1)


def probe_accuracy(x: torch.Tensor, z: torch.Tensor, k: int) -> float:
    """In-sample accuracy of a multinomial logistic-regression probe trained with L-BFGS."""
    x = x.to(torch.float64)
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, z) + 1e-4 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((x @ w + b).argmax(1) == z).double().mean())


# --------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", ["leace", "orth"])
@pytest.mark.parametrize("shrinkage", [False, True])
@pytest.mark.parametrize("constrain", [False, True])
def test_matches_concept_erasure_oracle(
    k: int, method: str, shrinkage: bool, constrain: bool
) -> None:
    x, z = make_data(k, k=k)
    oracle = concept_erasure.LeaceEraser.fit(
        x, one_hot(z, k), method=method, shrinkage=shrinkage, constrain_cov_trace=constrain
    )
    ours = LeaceEraser.fit(
        x, z, num_classes=k, method=method, shrinkage=shrinkage, constrain_cov_trace=constrain
    )
    expected = oracle(x)
    assert torch.allclose(ours(x), expected, atol=1e-5, rtol=0)
    # the dense linear part agrees too (oracle's P is I - left @ right)
    assert torch.allclose(ours.projection, oracle.P, atol=1e-5)


def test_matches_oracle_in_float32() -> None:
    x, z = make_data(7, k=2, dtype=torch.float32)
    oracle = concept_erasure.LeaceEraser.fit(x.double(), one_hot(z, 2), shrinkage=False)
    ours = LeaceEraser.fit(x, z)  # statistics in float64 by default
    out = ours(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), oracle(x.double()), atol=1e-5)


def test_continuous_concept_matches_oracle() -> None:
    x, z = make_data(3, k=2)
    g = torch.Generator().manual_seed(1)
    zc = torch.stack(
        [z.double() + 0.1 * torch.randn(len(z), generator=g, dtype=torch.float64), x[:, 0] * 0.5],
        dim=1,
    )  # (n, 2) continuous
    oracle = concept_erasure.LeaceEraser.fit(x, zc, shrinkage=False)
    ours = LeaceFitter(x.shape[1], 2).update(x, zc).fit()
    assert torch.allclose(ours(x), oracle(x), atol=1e-5)


def test_binary_single_column_equals_one_hot() -> None:
    x, z = make_data(4, k=2)
    single = LeaceFitter(x.shape[1], 1).update(x, z.double()).fit()
    hot = LeaceFitter(x.shape[1], 2).update(x, z).fit()
    assert single.rank == hot.rank == 1
    assert torch.allclose(single(x), hot(x), atol=1e-10)


# -------------------------------------------------------------------- guarantees


@pytest.mark.parametrize("method", ["leace", "orth"])
@pytest.mark.parametrize("k", [2, 4])
def test_erased_cross_covariance_is_zero(method: str, k: int) -> None:
    x, z = make_data(10 + k, k=k)
    before = cross_cov(x, one_hot(z, k)).abs().max()
    eraser = LeaceFitter(x.shape[1], k, method=method).update(x, z).fit()  # type: ignore[arg-type]
    after = cross_cov(eraser(x), one_hot(z, k)).abs().max()
    assert before > 0.1
    assert after < 1e-10 * max(1.0, float(x.abs().max()))
    # the unconditional mean is preserved (affine eraser centred on the mean)
    assert torch.allclose(eraser(x).mean(0), x.mean(0), atol=1e-10)


@pytest.mark.parametrize(("k", "priors"), [(2, [0.7, 0.3]), (3, [0.55, 0.3, 0.15])])
def test_probe_at_chance_after_erasure(k: int, priors: list[float]) -> None:
    x, z = make_data(20 + k, n=800, d=10, k=k, priors=priors)
    majority = float(torch.bincount(z, minlength=k).max()) / len(z)
    before = probe_accuracy(x, z, k)
    eraser = LeaceEraser.fit(x, z, num_classes=k)
    after = probe_accuracy(eraser(x), z, k)
    assert before > majority + 0.15
    assert abs(after - majority) < 0.03


def test_leace_moves_less_than_orth() -> None:
    """LEACE is the least-squares optimal eraser: no larger mean squared edit than orth."""
    x, z = make_data(5, k=3)
    leace = LeaceEraser.fit(x, z, method="leace")
    orth = LeaceEraser.fit(x, z, method="orth")
    dl = ((leace(x) - x) ** 2).sum(1).mean()
    do = ((orth(x) - x) ** 2).sum(1).mean()
    assert dl <= do + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(8, 80),
    d=st.integers(1, 10),
    k=st.integers(2, 4),
    method=st.sampled_from(["leace", "orth"]),
    shrinkage=st.booleans(),
)
def test_idempotent(seed: int, n: int, d: int, k: int, method: str, shrinkage: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, k, (n,), generator=g)
    scale = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * scale + z[:, None].double()
    eraser = LeaceFitter(d, k, method=method, shrinkage=shrinkage).update(x, z).fit()  # type: ignore[arg-type]
    once = eraser(x)
    twice = eraser(once)
    assert torch.allclose(twice, once, atol=1e-8 * (1 + float(x.abs().max())), rtol=0)
    assert eraser.rank <= min(k, d)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 199), max_size=6, unique=True),
    method=st.sampled_from(["leace", "orth"]),
)
def test_streaming_equals_one_shot(seed: int, cuts: list[int], method: str) -> None:
    x, z = make_data(seed, n=200, d=6, k=3)
    x = x * 50 + 1000.0  # large offset: naive sum-of-squares accumulation would lose digits
    one = LeaceFitter(6, 3, method=method).update(x, z)  # type: ignore[arg-type]
    many = LeaceFitter(6, 3, method=method)  # type: ignore[arg-type]
    bounds = [0, *sorted(cuts), 200]
    for lo, hi in itertools.pairwise(bounds):
        many.update(x[lo:hi], z[lo:hi])
    assert many.n_samples == one.n_samples == 200
    assert torch.allclose(many.mean_x, one.mean_x, rtol=1e-12, atol=0)
    assert torch.allclose(many.sigma_xz, one.sigma_xz, rtol=1e-9, atol=1e-9)
    if method == "leace":
        assert torch.allclose(many.sigma_xx, one.sigma_xx, rtol=1e-9, atol=1e-9)
    assert torch.allclose(many.fit()(x), one.fit()(x), rtol=0, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 4),
    method=st.sampled_from(["leace", "orth"]),
    cut=st.integers(1, 149),
    prior=st.floats(0.1, 0.9),
)
def test_centred_on_a_class(seed: int, k: int, method: str, cut: int, prior: float) -> None:
    """``fit(center=c)``: class ``c``'s mean stays where it is, every class mean lands on
    it (the concept is still erased), the map is idempotent and only the centre differs
    from LEACE's."""
    rest = [(1 - prior) / (k - 1)] * (k - 1)
    x, z = make_data(seed, n=150, d=6, k=k, priors=[prior, *rest])
    if len(torch.unique(z)) < k:
        return  # a class without samples has no mean (tested below)
    fitter = LeaceFitter(6, k, method=method)  # type: ignore[arg-type]
    fitter.update(x[:cut], z[:cut]).update(x[cut:], z[cut:])  # streamed
    direct = torch.stack([x[z == c].mean(0) for c in range(k)])
    assert torch.allclose(fitter.class_means, direct, rtol=0, atol=1e-10)
    pooled = fitter.fit()
    for c in range(k):
        eraser = fitter.fit(center=c)
        assert torch.equal(eraser.proj_left, pooled.proj_left)
        assert torch.equal(eraser.proj_right, pooled.proj_right)
        erased = eraser(x)
        means = torch.stack([erased[z == j].mean(0) for j in range(k)])
        assert torch.allclose(means, direct[c].expand(k, -1), rtol=0, atol=1e-8)
        assert torch.allclose(eraser(erased), erased, rtol=0, atol=1e-8)
        # class c moves least: its points only lose their own spread along the erased part
        moved = (erased - x).norm(dim=1)
        assert moved[z == c].mean() <= min(moved[z == j].mean() for j in range(k)) + 1e-12


def test_center_is_validated() -> None:
    x, z = make_data(1, n=40, d=3, k=3)
    fitter = LeaceFitter(3, 3).update(x, z)
    with pytest.raises(ValueError, match=r"center must be an int in \[0, 2\], got 3"):
        fitter.fit(center=3)
    with pytest.raises(TypeError, match=r"center must be an int in .* got bool"):
        fitter.fit(center=True)
    unseen = LeaceFitter(3, 3).update(x[z < 2], z[z < 2])
    assert torch.isnan(unseen.class_means[2]).all()
    with pytest.raises(ValueError, match="class 2 has no samples"):
        unseen.fit(center=2)
    continuous = LeaceFitter(3, 1).update(x, z.double())
    with pytest.raises(RuntimeError, match="categorical"):
        continuous.fit(center=0)
    soft = LeaceFitter(3, 2).update(x, torch.full((40, 2), 0.5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="categorical"):
        _ = soft.class_means


def test_statistics_match_direct_computation() -> None:
    x, z = make_data(8, n=300, d=5, k=2)
    fitter = LeaceFitter(5, 2).update(x[:100], z[:100]).update(x[100:], z[100:])
    assert torch.allclose(fitter.sigma_xx, torch.cov(x.T), atol=1e-12)
    assert torch.allclose(fitter.sigma_xz, cross_cov(x, one_hot(z, 2)), atol=1e-12)
    assert torch.allclose(fitter.mean_z, one_hot(z, 2).mean(0), atol=1e-15)


def test_trace_constraint_mixture_keeps_trace() -> None:
    """When LEACE would grow the trace (here: applied to a covariance it was not fit on),
    the mixture with the orthogonal projection brings it back to tr Σ exactly."""
    x, z = make_data(9, d=6, k=2)
    fitter = LeaceFitter(6, 2).update(x, z)
    plain = fitter.fit()
    g = torch.Generator().manual_seed(0)
    # A covariance concentrated on the direction LEACE's oblique projection pushes into.
    v = plain.proj_left[:, :1] / plain.proj_left[:, :1].norm()
    q = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    sigma = 0.01 * q @ q.T + 50.0 * (torch.eye(6, dtype=torch.float64) - v @ v.T)
    eye = torch.eye(6, dtype=torch.float64)
    p_leace = eye - plain.proj_left @ plain.proj_right
    assert torch.trace(p_leace @ sigma @ p_leace.T) > torch.trace(sigma)
    # Recover u: proj_left = W⁺u with W = Σ_XX^{-1/2} full rank, so u = W @ proj_left.
    evals, evecs = torch.linalg.eigh(fitter.sigma_xx)
    u = ((evecs * evals.rsqrt()) @ evecs.T) @ plain.proj_left  # (d, 1)
    assert torch.allclose(u.T @ u, torch.eye(1, dtype=torch.float64), atol=1e-10)
    left, right = LeaceFitter._constrain_trace(sigma, u, plain.proj_left, plain.proj_right)
    p_mix = eye - left @ right
    assert torch.allclose(torch.trace(p_mix @ sigma @ p_mix.T), torch.trace(sigma), rtol=1e-9)
    # the mixture is a*P_leace + (1-a)*(I - uuᵀ) for some a in [0, 1]
    q_orth = eye - u @ u.T
    diff = p_leace - q_orth
    a = float(((p_mix - q_orth) * diff).sum() / (diff * diff).sum())
    assert 0.0 <= a <= 1.0
    assert torch.allclose(p_mix, a * p_leace + (1 - a) * q_orth, atol=1e-10)


# ------------------------------------------------------------------ eraser object


def test_eraser_dtype_device_and_no_in_place() -> None:
    x, z = make_data(11, k=2, dtype=torch.float32)
    eraser = LeaceEraser.fit(x, z).to(dtype=torch.float32)
    assert eraser.dtype == torch.float32
    h = x.to(torch.bfloat16).reshape(20, 30, -1)  # (batch, seq, d_model)
    h_copy = h.clone()
    out = eraser(h)
    assert out.dtype == torch.bfloat16
    assert out.shape == h.shape
    assert torch.equal(h, h_copy)
    expected = eraser(h.float()).to(torch.bfloat16)
    assert torch.equal(out, expected)
    assert eraser.to(dtype=torch.float32) is eraser
    with pytest.raises(ValueError, match="move the eraser once"):
        eraser(torch.zeros(2, eraser.d_model, device="meta"))
    with pytest.raises(ValueError, match="last dimension d_model=12"):
        eraser(torch.zeros(2, 3))


def test_save_load_round_trip(tmp_path: pytest.TempPathFactory) -> None:
    x, z = make_data(12, k=3)
    eraser = LeaceEraser.fit(x, z)
    path = eraser.save(tmp_path / "eraser")  # type: ignore[operator]
    loaded = LeaceEraser.load(path)
    for name in ("proj_left", "proj_right", "bias"):
        assert torch.equal(getattr(loaded, name), getattr(eraser, name))
    assert torch.equal(loaded(x), eraser(x))


def test_load_rejects_bad_checkpoint(tmp_path: pytest.TempPathFactory) -> None:
    from safetensors.torch import save_file

    x, z = make_data(13, k=2)
    path = LeaceEraser.fit(x, z).save(tmp_path / "e")  # type: ignore[operator]
    save_file(
        {"proj_left": torch.zeros(12, 1), "bias": torch.zeros(12)}, str(path / "eraser.safetensors")
    )
    with pytest.raises(CheckpointError, match=r"missing keys \['proj_right'\]"):
        LeaceEraser.load(path)
    save_file(
        {
            "proj_left": torch.zeros(12, 1),
            "proj_right": torch.zeros(2, 12),
            "bias": torch.zeros(12),
        },
        str(path / "eraser.safetensors"),
    )
    with pytest.raises(CheckpointError, match="inconsistent eraser shapes"):
        LeaceEraser.load(path)
    (path / "eraser.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not an mmie LEACE eraser"):
        LeaceEraser.load(path)


def test_constant_concept_gives_identity(caplog: pytest.LogCaptureFixture) -> None:
    x, _ = make_data(14, k=2)
    with caplog.at_level(logging.WARNING, logger="mmie.edits.leace"):
        eraser = LeaceFitter(12, 2).update(x, torch.zeros(len(x), dtype=torch.long)).fit()
    assert eraser.rank == 0
    assert torch.allclose(eraser(x), x, atol=0)
    assert "identity" in caplog.text


def test_eraser_is_cached_and_reset_by_update() -> None:
    x, z = make_data(15, k=2)
    fitter = LeaceFitter(12, 2).update(x[:300], z[:300])
    first = fitter.eraser
    assert fitter.fit() is first
    fitter.update(x[300:], z[300:])
    assert fitter.eraser is not first


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 0, "num_classes": 2}, "d_model must be an int >= 1"),
        ({"d_model": 4, "num_classes": 0}, "num_classes must be an int >= 1"),
        ({"d_model": 4, "num_classes": 2, "method": "pca"}, "method must be 'leace' or 'orth'"),
        ({"d_model": 4, "num_classes": 2, "svd_tol": 0.0}, "svd_tol must be a positive"),
        ({"d_model": 4, "num_classes": 2, "dtype": torch.int64}, "dtype must be a floating"),
    ],
)
def test_fitter_validates_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LeaceFitter(**kwargs)  # type: ignore[arg-type]


def test_update_validates_inputs() -> None:
    fitter = LeaceFitter(4, 3)
    with pytest.raises(ValueError, match=r"x must be \[n, d_model=4\]"):
        fitter.update(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="z has 4 rows but x has 5"):
        fitter.update(torch.zeros(5, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels in z must lie in \[0, 3\)"):
        fitter.update(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="must hold integer class ids"):
        fitter.update(torch.zeros(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"z must be \[n\] labels or \[n, k=3\]"):
        fitter.update(torch.zeros(2, 4), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="must be finite"):
        fitter.update(torch.full((2, 4), float("nan")), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        fitter.update(torch.zeros(2, 4, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="has seen 0 sample"):
        fitter.fit()
    with pytest.raises(RuntimeError, match="not tracked for method='orth'"):
        _ = LeaceFitter(4, 2, method="orth").sigma_xx
