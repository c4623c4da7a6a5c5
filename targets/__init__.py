"""Targets: data sets, judge models, training with a disk cache, and the Oracle."""
