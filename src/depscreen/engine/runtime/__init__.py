"""Runtime: device choice, checkpoint loading and per-session model state."""
