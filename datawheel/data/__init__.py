"""Data: sources, content-addressed dataset versions, validation, the split and the transform."""
