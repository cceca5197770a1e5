"""Training: the networks, the device-resident training loop, checkpoints and export."""
