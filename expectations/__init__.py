"""Validation rules: the raw data contract and the Great Expectations suites/checkpoints."""
