"""Tests of mmie.seed_context and mmie.set_seed: scoped seeding that restores every state."""

from __future__ import annotations

import doctest
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmie
import mmie.seeding
from mmie.seeding import seed_context, set_seed

seeds = st.integers(0, 2**32 - 1)
steps = st.integers(0, 50)


def snapshot() -> tuple:
    """The full state of the three CPU generators (cached Gaussians included)."""
    return random.getstate(), np.random.get_state(), torch.get_rng_state().clone()


def assert_same_state(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]  # (version, Mersenne Twister state, gauss_next)
    name_a, keys_a, pos_a, has_gauss_a, cached_a = a[1]
    name_b, keys_b, pos_b, has_gauss_b, cached_b = b[1]
    assert (name_a, pos_a, has_gauss_a, cached_a) == (name_b, pos_b, has_gauss_b, cached_b)
    assert np.array_equal(keys_a, keys_b)
    assert torch.equal(a[2], b[2])


def advance(n_py: int, n_np: int, n_torch: int) -> None:
    """Move every generator somewhere, leaving cached Gaussians behind."""
    for _ in range(n_py):
        random.random()
    random.gauss(0.0, 1.0)  # draws a pair, caches the second value in gauss_next
    np.random.random_sample(n_np)
    np.random.standard_normal()  # legacy Box-Muller caches the second value
    torch.rand(n_torch)
    torch.randn(3)


def draw() -> tuple:
    return random.random(), random.gauss(0.0, 1.0), np.random.rand(3), torch.rand(3)


def expected_draws(seed: int) -> tuple:
    """What the three generators produce right after being seeded (independent oracles)."""
    py = random.Random(seed)
    rs = np.random.RandomState(seed)
    gen = torch.Generator().manual_seed(seed)
    return py.random(), py.gauss(0.0, 1.0), rs.rand(3), torch.rand(3, generator=gen)


def assert_draws_equal(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert np.array_equal(a[2], b[2])
    assert torch.equal(a[3], b[3])


class BoomError(Exception):
    pass


def run_in_context(seed: int, body) -> None:
    with seed_context(seed):
        body()


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n_py=steps, n_np=steps, n_torch=steps, inside=steps)
def test_states_restored_after_block(seed, n_py, n_np, n_torch, inside):
    advance(n_py, n_np, n_torch)
    before = snapshot()
    with seed_context(seed):
        advance(inside, inside, inside)
    assert_same_state(snapshot(), before)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n_py=steps, n_np=steps, n_torch=steps)
def test_states_restored_and_exception_unchanged(seed, n_py, n_np, n_torch):
    advance(n_py, n_np, n_torch)
    before = snapshot()
    error = BoomError("inside")

    def body():
        draw()
        raise error

    with pytest.raises(BoomError) as caught:
        run_in_context(seed, body)
    assert caught.value is error
    assert_same_state(snapshot(), before)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, n_py=steps, n_np=steps, n_torch=steps)
def test_draws_inside_depend_only_on_the_seed(seed, n_py, n_np, n_torch):
    advance(n_py, n_np, n_torch)
    with seed_context(seed):
        inside = draw()
    assert_draws_equal(inside, expected_draws(seed))


@settings(max_examples=25, deadline=None)
@given(outer=seeds, inner=seeds, n_before=steps, n_inner=steps, fail=st.booleans())
def test_nested_blocks_restore_level_by_level(outer, inner, n_before, n_inner, fail):
    advance(n_before, n_before, n_before)
    level0 = snapshot()
    with seed_context(outer):
        advance(n_before, 1, 2)
        level1 = snapshot()
        try:
            with seed_context(inner):
                assert_draws_equal(draw(), expected_draws(inner))
                advance(n_inner, n_inner, n_inner)
                if fail:
                    raise BoomError
        except BoomError:
            pass
        assert_same_state(snapshot(), level1)
        draw()
    assert_same_state(snapshot(), level0)


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [
        (-1, ValueError, r"seed must satisfy 0 <= seed < 2\*\*32, got -1"),
        (2**32, ValueError, r"seed must satisfy 0 <= seed < 2\*\*32, got 4294967296"),
        (True, TypeError, r"seed must be an int, got bool"),
        (np.bool_(False), TypeError, r"seed must be an int, got bool"),
        (1.0, TypeError, r"seed must be an int, got float"),
        ("3", TypeError, r"seed must be an int, got str"),
        (None, TypeError, r"seed must be an int, got NoneType"),
    ],
)
def test_invalid_seed_raises_before_any_state_changes(seed, error, match, monkeypatch):
    advance(3, 3, 3)
    before = snapshot()
    touched = []
    for module, name in [(random, "getstate"), (random, "seed"), (np.random, "get_state")]:
        monkeypatch.setattr(module, name, lambda *a, _n=name: touched.append(_n))
    with pytest.raises(error, match=match):
        seed_context(seed)  # raises on the call, not only on entering the block
    with pytest.raises(error, match=match):
        set_seed(seed)
    monkeypatch.undo()
    assert touched == []
    assert_same_state(snapshot(), before)


def test_numpy_integer_seeds_are_accepted():
    with seed_context(np.uint32(7)):
        a = draw()
    with seed_context(7):
        b = draw()
    assert_draws_equal(a, b)


@settings(max_examples=10, deadline=None)
@given(seed=seeds, n=steps)
def test_set_seed_seeds_without_restoring(seed, n):
    advance(n, n, n)
    set_seed(seed)
    assert_draws_equal(draw(), expected_draws(seed))


def test_exports():
    assert mmie.seed_context is seed_context
    assert mmie.set_seed is set_seed


def test_never_queues_a_cuda_seed_or_calls_torch_manual_seed(monkeypatch):
    # torch.manual_seed would queue a CUDA seed that fires when CUDA is first initialised.
    calls = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch, "manual_seed", lambda s: calls.append(("manual_seed", s)))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda s: calls.append(("cuda", s)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: calls.append(("cuda_all", s)))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: calls.append(("get",)))
    with seed_context(5):
        pass
    set_seed(5)
    assert calls == []


def test_cuda_states_captured_seeded_and_restored_when_initialised(monkeypatch):
    # Simulates an initialised CUDA on a CPU-only machine; the GPU test below does it for real.
    states = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)]
    calls = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(states))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: calls.append(("seed_all", s)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: calls.append(("restore", s)))
    seen_inside = []

    def body():
        seen_inside.extend(calls)
        raise BoomError

    with pytest.raises(BoomError):
        run_in_context(11, body)
    assert seen_inside == [("seed_all", 11)]
    assert calls[1][0] == "restore"
    assert all(torch.equal(a, b) for a, b in zip(calls[1][1], states, strict=True))
    set_seed(12)
    assert calls[2] == ("seed_all", 12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_states_restored_when_cuda_was_initialised():
    torch.cuda.init()
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    for i, dev in enumerate(devices):
        torch.rand(17 + i, device=dev)  # move every device's generator somewhere
    before = [s.clone() for s in torch.cuda.get_rng_state_all()]
    with seed_context(123):
        inside = [torch.rand(5, device=dev) for dev in devices]
    for dev, got in zip(devices, inside, strict=True):
        gen = torch.Generator(device=dev).manual_seed(123)
        assert torch.equal(got, torch.rand(5, device=dev, generator=gen))
    after = torch.cuda.get_rng_state_all()
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_stays_uninitialised_and_unseeded():
    # A fresh interpreter: CUDA is not initialised there yet. Neither function may
    # initialise it or queue a seed that would fire when it is initialised later.
    code = textwrap.dedent(
        """
        import torch, mmie
        with mmie.seed_context(1):
            torch.rand(3)
        mmie.set_seed(2)
        assert not torch.cuda.is_initialized(), "CUDA was initialised"
        torch.cuda.init()
        # A queued seed would have run at init and left initial_seed() at 1 or 2. (The
        # default CUDA seed itself is not a constant: torch 2.11 draws it per process.)
        assert torch.cuda.initial_seed() not in (1, 2), torch.cuda.initial_seed()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_docstring_examples_run():
    result = doctest.testmod(mmie.seeding)
    assert result.attempted > 0
    assert result.failed == 0
