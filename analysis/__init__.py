"""The thesis' explainability study on trained checkpoints: latents, PCA, K-Means, skips."""
