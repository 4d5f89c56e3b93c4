"""Training engine: fit loop, checkpoints."""
