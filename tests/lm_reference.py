"""Shared reference computations for the LM-scoring tests (written independently of mmie)."""

from __future__ import annotations

import torch

# Mixed scripts and lengths, so batches need padding.
TEXTS = [
    "hello world",
    "नमस्ते दुनिया",
    "ab",
    "a much longer sentence than all the others, to force padding",
    "xyz",
    "मेरा नाम राम है",
    "the cat sat",
    "ਅੱਜ ਬਹੁਤ ਗਰਮੀ ਹੈ।",
    "আজ খুব বৃষ্টি হচ্ছে।",
]


def token_logprobs(model, tokenizer, text):
    """Log-probabilities of each predicted token of one unpadded text (manual)."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # (seq, vocab)
    logp = torch.log_softmax(logits, -1)
    return torch.stack([logp[t, ids[0, t + 1]] for t in range(ids.shape[1] - 1)])
