"""Losses and advantage estimators, one module per algorithm family, free of models and envs.

- ``policy``: the clipped surrogate, KL to a reference and categorical entropy (shared);
- ``ppo``: GAE, the (clipped) value loss and explained variance;
- ``grpo``: group-relative advantages.
"""
