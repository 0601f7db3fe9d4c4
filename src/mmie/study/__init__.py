"""Whole studies: config, data sets, the demo, arms, shards, the evaluation suite, gates, reports and the runner.

The public names are re-exported by :mod:`mmie`; module paths here are internal.
"""
