"""Engine: media to estimates, no networking (segmenter, features, model, runtime, training)."""
