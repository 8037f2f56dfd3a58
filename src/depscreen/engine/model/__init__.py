"""The screening model: Mamba blocks, modality encoders, gated fusion, session stack and heads."""
