"""RL algorithms, one module each, found through the ``mmrl_harness.algorithms`` entry points.

- ``grpo``: TRL's ``GRPOTrainer`` on single-turn tasks (``grpo.py``; the TRL glue in
  ``grpo_trainer.py``);
- ``ppo``: episodic PPO with a value head and GAE (``ppo.py``);
- ``episodic_grpo``: group-relative advantages over whole episodes (``episodic_grpo.py``).

Adding one is a module with an ``Algorithm`` subclass and one entry point; see
``docs/architecture.md``.
"""

from mmrl_harness.train.algorithms.base import Algorithm, load_algorithm

__all__ = ["Algorithm", "load_algorithm"]
