"""Training and evaluation: optimizers, the sharded train step, the top-down loop."""
