"""Meta-train a schedule network: ``python train_meta.py [--option=value ...]``.

With no arguments: a short meta-training run by exact gradients through whole training runs
(``--estimator=unroll``; about 3 minutes on 2 CPU cores) over MNIST-1D, digits and tabular
tasks with random optimizers, base-LR scales and budgets, writing to
``runs/NAME-TIME/`` the checkpoint (``NAME.safetensors`` + ``NAME.json``), ``NAME.metrics.csv``
and ``NAME.png``. ``--help`` lists every option; they live in
:mod:`metalr.learned.train.config`. ``metalr meta-train`` is the same command.
"""

import sys

from metalr.learned.train.config import main

if __name__ == "__main__":
    sys.exit(main())
