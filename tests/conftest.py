"""Shared fixtures: tiny tokenizers and models built from configs (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from mmie.testing import byte_tokenizer, tiny_causal_lm

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=25)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Tiny models gain nothing from intra-op threads; one thread avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    """A byte-level tokenizer (259 tokens, left padding)."""
    return byte_tokenizer()


@pytest.fixture
def model():
    """A fresh 2-block tiny Llama (d_model 32, seed 0) in fp32 eval mode."""
    return tiny_causal_lm("llama", seed=0)


@pytest.fixture
def other():
    """A second tiny Llama with other weights (seed 1): an independent reference model."""
    return tiny_causal_lm("llama", seed=1)
