"""Training and evaluation: dataset adapters, feature cache, trainer, cross-validation, reports, model cards."""
