"""rlprune: reinforcement-learning-driven pruning of PyTorch CNNs.

This module only re-exports the public API; the code lives in `rlprune.models`,
`rlprune.env`, `rlprune.agent` and `rlprune.service`.
"""
