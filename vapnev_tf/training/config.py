"""`TrainConfig`: the frozen, validated description of a training run (all but model and data).

Each field's default, bounds, help and resume rule live in its declaration below
(`vapnev_tf.config_fields`); the `--flag`s of `vapnev_tf.train` are generated from them.
"""
import dataclasses

from vapnev_tf.config_fields import RESUMABLE
from vapnev_tf.config_fields import RUN_DEFINING
from vapnev_tf.config_fields import ConfigBase
from vapnev_tf.config_fields import bool_field
from vapnev_tf.config_fields import choice_field
from vapnev_tf.config_fields import float_field
from vapnev_tf.config_fields import int_field

STRATEGIES = ("mirrored", "multi_worker", "one_device")
KL_SCHEDULES = ("linear", "sigmoid", "cyclical")
KL_FREE_NATS_MODES = ("total", "per_dim")
LR_DECAYS = ("none", "cosine")

_RUN, _FREE = dict(resume=RUN_DEFINING), dict(resume=RESUMABLE)
_OPTIMISER = "changes the optimisation trajectory the checkpoint is part of"
_CADENCE = "how often the loop reports or saves; not what it computes"
_EVAL = "evaluation only: the weights trained do not depend on it"


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
  """How to train: optimiser, schedules, loop cadence, evaluation, robustness.

  Step counting: `step` counts training batches consumed, including skipped (non-finite) ones, so
  `train_steps` is the number of batches a run reads. The optimiser's own `iterations` counts only
  the updates it applied (`step - skipped_steps`); the learning-rate schedule follows `iterations`,
  the KL weight follows `step`.

  Each field is RUN_DEFINING (a resumed run must use the stored value) or RESUMABLE (may change
  when a run resumes), with the reason, in its metadata (`resume`, `why`).
  """

  seed: int = int_field(
      0, "Seeds weights init, data order, dequantisation and z sampling.", lo=0, **_RUN,
      why="the data stream resumes at its position in the seed's order and noise")
  train_steps: int = int_field(
      1000, "Total training steps (global batches); a resumed run continues up to it.", lo=1,
      **_FREE, why="extending a run is what resuming is for (a cosine decay then re-stretches "
      "from the current iteration to the new end)")
  strategy: str = choice_field(
      "mirrored", "tf.distribute strategy: mirrored (all local devices), multi_worker "
      "(MultiWorkerMirroredStrategy from TF_CONFIG), one_device.", STRATEGIES, **_FREE,
      why="where the run executes; batch_size is global, so the same updates are computed")
  jit_compile: bool = bool_field(
      False, "XLA-compile the loss and gradients.", **_FREE,
      why="a compilation choice for the same computation")
  intra_op_threads: int = int_field(
      0, "Threads TensorFlow uses inside one op (0: TF's choice). On a 2-core CPU, "
      "--intra_op_threads=1 --inter_op_threads=2 runs small convolutions side by side "
      "(docs/results.md, Per-op overhead).", lo=0, **_FREE,
      why="how ops are scheduled on the CPU, not what they compute")
  inter_op_threads: int = int_field(
      0, "Ops TensorFlow runs in parallel (0: TF's choice); see --intra_op_threads.", lo=0,
      **_FREE, why="how ops are scheduled on the CPU, not what they compute")
  learning_rate: float = float_field(
      1e-3, "Adam learning rate (peak).", lo=0.0, lo_open=True, **_RUN, why=_OPTIMISER)
  adam_beta1: float = float_field(0.9, "Adam beta_1.", lo=0.0, hi=1.0, hi_open=True, **_RUN,
                                  why=_OPTIMISER)
  adam_beta2: float = float_field(0.999, "Adam beta_2.", lo=0.0, hi=1.0, hi_open=True, **_RUN,
                                  why=_OPTIMISER)
  adam_epsilon: float = float_field(1e-7, "Adam epsilon.", lo=0.0, lo_open=True, **_RUN,
                                    why=_OPTIMISER)
  warmup_steps: int = int_field(
      0, "Linear learning-rate warm-up from 0 over this many updates.", lo=0, **_RUN,
      why="part of the learning-rate schedule")
  lr_decay: str = choice_field(
      "none", "Learning-rate decay after warm-up: none, or cosine to min_lr_fraction * "
      "learning_rate at train_steps.", LR_DECAYS, **_RUN, why="part of the learning-rate schedule")
  min_lr_fraction: float = float_field(
      0.0, "Cosine decay ends at this fraction of the learning rate.", lo=0.0, hi=1.0, **_RUN,
      why="part of the learning-rate schedule")
  clip_grad_norm: float = float_field(
      0.0, "Clip the gradient by this global norm; 0 = off.", lo=0.0, **_RUN, why=_OPTIMISER)
  kl_anneal_steps: int = int_field(
      0, "KL weight rises from 0 to 1 over these steps (Bowman et al.); 0 = always 1.", lo=0,
      **_RUN, why="the objective being optimised at each step")
  kl_schedule: str = choice_field(
      "linear", "Shape of the KL annealing (see schedules.kl_weight).", KL_SCHEDULES, **_RUN,
      why="the objective being optimised at each step")
  kl_cycles: int = int_field(
      4, "Cycles of --kl_schedule=cyclical within the first kl_anneal_steps steps (Fu et al., "
      "2019).", lo=1, **_RUN, why="the objective being optimised at each step", absent_means=4)
  kl_cycle_ratio: float = float_field(
      0.5, "Fraction of each cycle of --kl_schedule=cyclical over which the KL weight rises from "
      "0 to 1 (it is 1 for the rest of the cycle).", lo=0.0, lo_open=True, hi=1.0, **_RUN,
      why="the objective being optimised at each step", absent_means=0.5)
  kl_free_nats: float = float_field(
      0.0, "Free bits (Kingma et al., 2016): the training loss charges max(kl_free_nats, the "
      "batch-mean KL) nats of KL, so the posterior may carry that much information for free "
      "(against posterior collapse); 0 = off. Reported bounds always use the full KL.", lo=0.0,
      **_RUN, why="the objective being optimised at each step", absent_means=0.0)
  kl_free_nats_mode: str = choice_field(
      "total", "Free bits hinge: total = max(kl_free_nats, batch-mean KL); per_dim = sum over "
      "latent dimensions d of max(kl_free_nats / latent_dim, batch-mean KL_d) (Kingma et al., "
      "2016; needs posterior=gaussian and prior=standard).", KL_FREE_NATS_MODES, **_RUN,
      why="the objective being optimised at each step", absent_means="total")
  aggressive_steps: int = int_field(
      0, "Aggressive inference (He et al., 2019, simplified): during the first N steps each step "
      "first takes aggressive_encoder_updates encoder-only (and IAF-only) updates on its batch; "
      "0 = off.", lo=0, **_RUN, why="the updates applied at each step", absent_means=0)
  aggressive_encoder_updates: int = int_field(
      5, "Encoder-only updates per step during the first aggressive_steps steps.", lo=1, **_RUN,
      why="the updates applied at each step", absent_means=5)
  log_every: int = int_field(100, "Steps between log lines and training summaries.", lo=1,
                             **_FREE, why=_CADENCE)
  eval_every: int = int_field(
      0, "Steps between test-set ELBO evaluations (0 = only at the end).", lo=0, **_FREE,
      why=_EVAL)
  eval_num_samples: int = int_field(
      1, "k of the importance-weighted bound computed at the end (1 = ELBO only).", lo=1,
      **_FREE, why=_EVAL)
  eval_chunk_size: int = int_field(16, "Importance samples evaluated at once (memory bound).",
                                   lo=1, **_FREE, why=_EVAL)
  eval_seed: int = int_field(
      0, "Seed of the test-set dequantisation noise and evaluation z draws.", lo=0, **_FREE,
      why=_EVAL)
  checkpoint_every: int = int_field(
      1000, "Steps between checkpoints (one is also written at the end).", lo=1, **_FREE,
      why=_CADENCE)
  max_to_keep: int = int_field(3, "Checkpoints kept in WORKDIR/checkpoints.", lo=1, **_FREE,
                               why=_CADENCE)
  max_consecutive_bad_steps: int = int_field(
      10, "Abort after this many consecutive non-finite steps.", lo=1, **_FREE,
      why="a safety threshold; the steps taken do not depend on it until it aborts")
  sample_temperature: float = float_field(
      0.8, "Temperature of the sample grids (TensorBoard and figures).", lo=0.0, **_FREE,
      why="summaries and figures only")
  num_image_samples: int = int_field(36, "Images in each TensorBoard grid.", lo=1, **_FREE,
                                     why="summaries and figures only")
  export_at_end: bool = bool_field(
      True, "Write WORKDIR/export and WORKDIR/figures at the end (if vapnev_tf.export / figures "
      "exist).", **_FREE, why="what is written after training, not the training")
  latent_eval: bool = bool_field(
      False, "After the final evaluation, compute the latent figures on the run's test images "
      "(WORKDIR/latent.json; what `vapnev_tf.evaluate --latent` computes) and print their line.",
      **_FREE, why=_EVAL)
