"""Training: synthetic data with a planted signal and the trainer that writes checkpoints."""
