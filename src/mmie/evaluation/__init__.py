"""Metrics: perplexity and KL, language metrics, membership inference, probes, leakage, layer selection.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
