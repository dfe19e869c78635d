"""Training: the one loop, its callbacks, the builder, checkpoints and the run record."""
