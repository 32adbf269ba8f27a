"""Compound scaling of specs (EfficientNet step two)."""
