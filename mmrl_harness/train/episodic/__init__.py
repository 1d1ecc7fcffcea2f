"""The harness's own episodic RL loop (multi-turn tasks), shared by every episodic algorithm.

- ``algorithm``: ``EpisodicAlgorithm``, the hooks an algorithm fills in;
- ``trainer``: ``train_episodic``, the loop (collect -> advantages -> update -> log -> checkpoint);
- ``rollout``: environments stepped in batches (``collect_steps``, ``collect_episodes``);
- ``policy``: the actor-critic, acting and scoring through ``mmrl_harness.policy_head`` (the
  evaluator's head); ``update``: minibatch optimisation;
- ``metrics``, ``checkpoint``, ``config`` (``EpisodicConfig``, the ``episodic:`` block).
"""
