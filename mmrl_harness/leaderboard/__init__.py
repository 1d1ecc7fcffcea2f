"""Leaderboards: board definitions, checked submissions, a rendered page, Hub exports.

- ``board``: ``leaderboards/<name>/board.yaml`` (``BoardSpec``) and the board's folder;
- ``submit``: ``mmrl submit`` (every check, then an atomic, sanitised, content-addressed copy);
- ``ranking``: entries ranked by an aggregate over training seeds with bootstrap CIs;
- ``render`` and ``plots``: ``README.md`` and a self-contained ``index.html``;
- ``reproduce``: re-run an entry's episodes and compare them with the submitted records;
- ``hub``: ``.eval_results/*.yaml`` and ``model-index`` metadata for a Hub model card;
- ``cli``: the ``mmrl submit``, ``mmrl leaderboard ...`` and ``mmrl export-hub`` commands.

See docs/leaderboards.md. Submodules are imported on use, so ``mmrl --help`` stays fast.
"""
