"""Training of VAPNEV: frozen `TrainConfig`, the distributed loop, its evaluations.

    from vapnev_tf import training
    result = training.train(model_cfg, data_cfg, train_cfg, workdir)

Library code only: configs come in as arguments (`vapnev_tf.train` turns flags into them). The
run's products (export, figures, latent figures) are above training: `vapnev_tf.pipeline.train`
is `train` with them. The evaluation routine is `vapnev_tf.evaluation` (re-exported here).

Modules: `run` (`train`, a table of contents of the stages below), `rundir` (checks, lock, the
config record; the record itself is `vapnev_tf.config_run`), `restore` (state
built or restored), `loop` (the steps and their cadences), `finish` (final evaluation, then
`at_end`); their parts: `step` (the public training step), `reporting` (logs, TensorBoard,
eval.json), `signals`, `images`, `checkpointing`, `distribute`, `schedules`. `TrainConfig` is in `vapnev_tf.config`.
"""
from vapnev_tf.errors import CheckpointError
from vapnev_tf.errors import ConfigError
from vapnev_tf.errors import NonFiniteTrainingError
from vapnev_tf.evaluation import Evaluator
from vapnev_tf.evaluation import evaluate
from vapnev_tf.evaluation import summary_line
from vapnev_tf.evaluation import write_eval_json
from vapnev_tf.config import KL_SCHEDULES
from vapnev_tf.config import LR_DECAYS
from vapnev_tf.config import STRATEGIES
from vapnev_tf.config import TrainConfig
from vapnev_tf.training.distribute import make_strategy
from vapnev_tf.training.rundir import UnrestorableRunError
from vapnev_tf.training.run import train
from vapnev_tf.training.schedules import WarmupDecay
from vapnev_tf.training.schedules import kl_weight
from vapnev_tf.training.step import TrainState
from vapnev_tf.training.step import make_train_step
from vapnev_tf.training.threads import ThreadChoice
from vapnev_tf.training.threads import configure_threads

__all__ = ["CheckpointError", "ConfigError", "Evaluator", "KL_SCHEDULES", "LR_DECAYS",
           "NonFiniteTrainingError", "STRATEGIES", "ThreadChoice", "TrainConfig", "TrainState",
           "UnrestorableRunError", "WarmupDecay", "configure_threads", "evaluate", "kl_weight",
           "make_strategy", "make_train_step", "summary_line", "train", "write_eval_json"]
