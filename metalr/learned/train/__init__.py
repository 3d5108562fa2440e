"""Meta-training of schedule networks (the outer loop); nothing in :mod:`metalr` imports it.

- :mod:`~metalr.learned.train.config`: the options and the ``train_meta.py`` command;
- :mod:`~metalr.learned.train.distribution`: the episodes full-horizon training samples;
- :mod:`~metalr.learned.train.inner`: one inner training run on tensors (optimizers, schedule
  cell, features), differentiable, which the population and the unroll run;
- :mod:`~metalr.learned.train.unroll`: the exact hypergradient through a whole run (the default);
- :mod:`~metalr.learned.train.full_es`: the antithetic ES estimator over whole runs;
- :mod:`~metalr.learned.train.population`: an episode's ES members as one vectorised model;
- :mod:`~metalr.learned.train.outer_loop`: unroll or ES steps over N processes, resumable state;
- :mod:`~metalr.learned.train.lookahead`: MLR-SNet's ``higher`` lookahead (the only module
  that imports ``higher``).
"""
