"""Model serving: the Open Inference Protocol v2 over a registered, exported model."""
