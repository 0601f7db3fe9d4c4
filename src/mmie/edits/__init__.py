"""Interventions on a model's computation: SAE gate, LEACE scrubber, LoReFT adapters, dynamic gating.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
