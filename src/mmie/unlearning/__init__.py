"""Unlearning objectives, training configuration, the trainer, LoRA/ReFT unlearning and the per-seed arm lifecycle.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
