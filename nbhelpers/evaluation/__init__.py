"""Evaluation of finished runs: predictions re-scored and compared across runs, attention maps."""
