"""Training and evaluation: one loop (``loop``) for every method, each method a task object
(``tasks``: ``TASKS`` keyed by ``config.task``), optimizers, the sharded step, weights,
multi-host helpers."""
