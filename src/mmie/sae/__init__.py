"""Sparse autoencoders: configuration, model, checkpoint formats, training, quality checks and feature pickers.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
