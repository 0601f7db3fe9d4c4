"""Unicode scripts of characters, texts and vocabulary tokens, and language detectors.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
