"""Monitoring: how far production inputs have drifted from the training data."""
