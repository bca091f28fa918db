"""The frozen, validated configs of a run: `ModelConfig` (a VAPNEV model, Sec. 4.2 defaults) and
`TrainConfig` (how to train it: all but model and data; `DataConfig` lives with the pipeline).

Each field's default, bounds, help and resume rule live in its declaration below
(`vapnev_tf.config_fields`); the `--flag`s of `vapnev_tf.train` are generated from them.
"""
import dataclasses

from vapnev_tf import flow_steps
from vapnev_tf.config_fields import RESUMABLE
from vapnev_tf.config_fields import RUN_DEFINING
from vapnev_tf.config_fields import ConfigBase
from vapnev_tf.config_fields import bool_field
from vapnev_tf.config_fields import choice_field
from vapnev_tf.config_fields import float_field
from vapnev_tf.config_fields import int_field
from vapnev_tf.config_fields import shape_field
from vapnev_tf.config_fields import str_field
from vapnev_tf.dequantization import DEQUANTIZATIONS
from vapnev_tf.flow import check_flow_geometry
from vapnev_tf.layers import COMPUTE_DTYPES
from vapnev_tf.layers import CONDITIONINGS
from vapnev_tf.layers.coupling_network import RECEPTIVE_FIELDS
from vapnev_tf.likelihoods import FLOW_LIKELIHOODS
from vapnev_tf.likelihoods import LIKELIHOODS
from vapnev_tf.likelihoods import VAE_LIKELIHOODS
from vapnev_tf.posteriors import POSTERIORS
from vapnev_tf.priors import PRIORS

# The choices of the fields below are the lists of the modules that implement them (one home
# each); DTYPES and the training lists further down are this module's own.
DTYPES = ("float32", "float64")

# Bounds that keep the model finite (docs/design.md §1 and §6). A coupling multiplies by
# exp(b * tanh(l / b)), within [exp(-b), exp(b)] for b = log_scale_bound: b <= 20 keeps one
# coupling's factor (<= 5e8) far inside float32 (the default 3 is the design's). Scales
# sigma = softplus(.) + min_scale are in units of logits or pixels / 256: a floor of 1 or more
# would forbid any sharp density. logit_alpha = 0 maps pixel 0 to logit(0) = -inf; 0.5 maps every
# pixel to logit(0.5) = 0.
MAX_LOG_SCALE_BOUND = 20.0


@dataclasses.dataclass(frozen=True)
class ModelConfig(ConfigBase):
  """Every architectural number of the model; defaults are the paper's (Sec. 4.2).

  likelihood:
    "vapnev"          conditional flow (Eq. 16) with decoder base N(mu_y, sigma_y)   (the paper)
    "vae_flow"        the same flow not conditioned on z (Fig. 1's dotted line)
    "pixel_gaussian"  classic VAE: diagonal Gaussian on pixels / 256
    "pixel_logistic"  classic VAE: discretised logistic on the 256 pixel levels
    "realnvp"         no VAE: the unconditional flow with a standard-normal base
    "vapnev_fixed_z"  no VAE: vapnev's decoder and conditional flow at one fixed z, i.e. learned
                      input-independent biases (docs/design.md §24)
  All give a bound on -log p(x) over dequantised x in [0, 256)^D, so bits/dim are comparable.
  The encoder has `encoder_blocks` blocks of `encoder_layers_per_block` 3x3 convs (the first conv
  of a block halves the resolution; filters double per block); the decoder mirrors it, with
  `decoder_filters` (0: `encoder_filters`) at its full-resolution block. Every field
  of a ModelConfig defines the run: a resumed run must use the same values.
  """

  image_shape: tuple = shape_field(
      (28, 28, 1), "(H, W, C) of the images; derived from --dataset by vapnev_tf.train.",
      flag=None)
  likelihood: str = choice_field("vapnev", "p(x|z) (or realnvp, vapnev_fixed_z: no VAE).",
                                 LIKELIHOODS)
  latent_dim: int = int_field(256, "Size of z.", lo=1)
  encoder_filters: int = int_field(32, "Filters of the first encoder block (doubled per block).",
                                   lo=1)
  encoder_blocks: int = int_field(4, "Encoder/decoder blocks.", lo=1)
  encoder_layers_per_block: int = int_field(2, "Conv layers per block.", lo=1)
  decoder_filters: int = int_field(
      0, "Filters of the decoder's full-resolution block (doubled per block towards z); 0: "
      "encoder_filters, the encoder's mirror (Sec. 4.2). A narrower decoder is cheaper per step "
      "(docs/design.md §27).", lo=0, absent_means=0)
  flow_scales: int = int_field(2, "Scales of the multi-scale flow.", lo=1)
  flow_checkerboard: int = int_field(3, "Checkerboard couplings per scale.", lo=0)
  flow_channelwise: int = int_field(3, "Channel-wise couplings per scale.", lo=0)
  flow_filters: int = int_field(64, "Coupling filters at the first scale (doubled per scale).",
                                lo=1)
  flow_res_blocks: int = int_field(2, "Residual blocks in l1/m1.", lo=0)
  flow_layout: str = str_field(
      "", "The flow's steps per scale in the grammar of vapnev_tf.flow_steps.layout, e.g. "
      "'checkerboard*3 squeeze channel*3 factor_out | checkerboard*3 squeeze channel*3'; "
      "empty: flow_scales scales of flow_checkerboard + flow_channelwise couplings (Sec. 4.2). "
      "When set, it replaces those three fields.", nonempty=False)
  log_scale_bound: float = float_field(
      3.0, "Bound b of coupling log-scales, b * tanh(l / b) (docs/design.md §6).", lo=0.0,
      lo_open=True, hi=MAX_LOG_SCALE_BOUND)
  logit_alpha: float = float_field(
      0.05, "alpha of the logit pre-processing (docs/design.md §1).", lo=0.0, lo_open=True,
      hi=0.5, hi_open=True)
  min_scale: float = float_field(1e-3, "Lower bound of sigma_z and sigma_y.", lo=0.0,
                                 lo_open=True, hi=1.0, hi_open=True)
  dtype: str = choice_field("float32", "Model dtype.", DTYPES)
  dequantization: str = choice_field(
      "uniform", "q(u|x) of the dequantisation noise: uniform (the data's own U[0,1) noise) or "
      "variational (a small conditional flow, Flow++; flow likelihoods only).", DEQUANTIZATIONS)
  dequantization_filters: int = int_field(
      16, "Filters of the variational dequantisation flow's conv nets.", lo=1)
  posterior: str = choice_field(
      "gaussian", "q(z|x): the encoder's diagonal Gaussian, or it followed by iaf_steps inverse "
      "autoregressive flow steps (Kingma et al. 2016).", POSTERIORS)
  iaf_steps: int = int_field(2, "IAF steps of posterior=iaf.", lo=1)
  iaf_hidden: int = int_field(0, "Units of each masked layer of an IAF step; 0: 2 * latent_dim.",
                              lo=0)
  committed_rate: float = float_field(
      0.0, "delta-VAE committed rate delta in nats per image (Razavi et al. 2019): q(z|x) gets a "
      "fixed scale sigma_delta < 1 per dimension so that KL(q(z|x) || N(0, I)) >= delta for every "
      "x (docs/design.md §18); 0 = off (the encoder's sigma_z).", lo=0.0, absent_means=0.0)
  prior: str = choice_field(
      "standard", "p(z): standard = N(0, I) (the paper); flow = N(0, I) followed by prior_steps "
      "learned masked autoregressive flow steps (docs/design.md §18).", PRIORS,
      absent_means="standard")
  prior_steps: int = int_field(2, "MAF steps of prior=flow (2 * latent_dim units per layer).",
                               lo=1, absent_means=2)

  conditioning: str = choice_field(
      "per_coupling", "How couplings see z: per_coupling = own l2/m2 deconvolution nets (the "
      "paper); shared = one z-trunk per pass + 1x1 heads (our extension, docs/internals.md).",
      CONDITIONINGS)
  fused_networks: bool = bool_field(
      False, "l1/m1 as one two-headed ResidualNet and l2/m2 as one two-headed net (Real NVP).")
  flow_receptive_field: str = choice_field(
      "full", "Receptive field of the couplings' l1/m1 networks: full = 3x3 convolutions "
      "throughout (the paper); local = 1x1 after the first 3x3 convolution, so each coupling sees "
      "a 3x3 neighbourhood and global structure must come through z (docs/design.md §18).",
      RECEPTIVE_FIELDS, absent_means="full")
  compute_dtype: str = choice_field(
      "float32", "Compute dtype of the hidden layers of the convolutional networks "
      "(bfloat16 = mixed_bfloat16: float32 variables and optimizer state; each network's output "
      "layer, the coupling arithmetic, log-dets, KL and losses stay float32; docs/design.md §25).",
      COMPUTE_DTYPES)

  def _check_consistency(self):
    if self.compute_dtype == "bfloat16" and self.dtype != "float32":
      raise ValueError(f"compute_dtype='bfloat16' needs dtype='float32' (mixed_bfloat16 keeps "
                       f"float32 variables), got dtype={self.dtype!r}.")
    if self.dequantization != "uniform" and not self.uses_flow:
      raise ValueError(f"ModelConfig.dequantization={self.dequantization!r} needs a flow "
                       f"likelihood {FLOW_LIKELIHOODS}, got likelihood={self.likelihood!r} (a "
                       "pixel likelihood is already a discrete or uniform-bin model).")
    if self.posterior != "gaussian" and not self.has_vae:
      raise ValueError(f"ModelConfig.posterior={self.posterior!r} needs a VAE, got "
                       f"likelihood={self.likelihood!r} (no q(z|x)).")
    if self.prior != "standard" and not self.has_vae:
      raise ValueError(f"ModelConfig.prior={self.prior!r} needs a VAE, got "
                       f"likelihood={self.likelihood!r} (no z).")
    if self.committed_rate > 0 and (not self.has_vae or self.posterior != "gaussian"
                                    or self.prior != "standard"):
      raise ValueError(f"ModelConfig.committed_rate={self.committed_rate} needs a VAE with "
                       f"posterior='gaussian' and prior='standard' (its KL bound is for those), "
                       f"got likelihood={self.likelihood!r}, posterior={self.posterior!r}, "
                       f"prior={self.prior!r}.")
    if self.flow_receptive_field != "full" and not self.uses_flow:
      raise ValueError(f"ModelConfig.flow_receptive_field={self.flow_receptive_field!r} needs a "
                       f"flow likelihood {FLOW_LIKELIHOODS}, got likelihood={self.likelihood!r}.")
    if not self.uses_flow:
      return
    if self.flow_layout.strip():
      try:
        flow_steps.plan_layout(flow_steps.parse_layout(self.flow_layout), self.image_shape)
      except ValueError as e:
        raise ValueError(f"ModelConfig.flow_layout={self.flow_layout!r}: {e}") from None
      return
    if self.flow_checkerboard + self.flow_channelwise == 0:
      raise ValueError("flow_checkerboard + flow_channelwise must be >= 1 for a flow likelihood.")
    check_flow_geometry(self.image_shape, self.flow_scales)

  @property
  def uses_flow(self) -> bool:
    return self.likelihood in FLOW_LIKELIHOODS

  @property
  def has_vae(self) -> bool:
    return self.likelihood in VAE_LIKELIHOODS

  @property
  def num_dims(self) -> int:
    h, w, c = self.image_shape
    return h * w * c


# ------------------------------------------------------------------------------------ training

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
      0, "Threads TensorFlow uses inside one op; 0 = chosen from the cores this process may "
      "use, max(1, cores // 2) (docs/design.md §25). "
      "The choice is logged at start and recorded in config.json's \"threads\".", lo=0,
      **_FREE, why="how ops are scheduled on the CPU, not what they compute")
  inter_op_threads: int = int_field(
      0, "Ops TensorFlow runs in parallel; 0 = chosen from the cores this process may use: "
      "min(2, cores) (docs/design.md §25). See --intra_op_threads.", lo=0,
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
  ema_decay: float = float_field(
      0.0, "Polyak averaging: keep an exponential moving average of every trainable weight, "
      "average = ema_decay * average + (1 - ema_decay) * weight after each applied update (the "
      "first update sets it), and evaluate, export and sample with the averages "
      "(docs/design.md §23); 0 = off (the raw weights).", lo=0.0, hi=1.0, hi_open=True, **_RUN,
      why="the averages are a running sum over the run's trajectory, checkpointed with it: a run "
      "resumed with another decay would report weights that no single decay averaged, and one "
      "switched on mid-run has no averages to resume", absent_means=0.0)
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
