"""Embedding VAE for stochastic null-text / conditional embeddings (see the stochastic-embedding paper)."""
