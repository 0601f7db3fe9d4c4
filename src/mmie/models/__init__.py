"""Model plumbing: loading, tokenisation, blocks, the one hook mechanism, activations and generation.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
