"""`ModelConfig`: the frozen, validated description of a VAPNEV model (Sec. 4.2 defaults)."""
import dataclasses

LIKELIHOODS = ("vapnev", "vae_flow", "pixel_gaussian", "pixel_logistic", "realnvp")
FLOW_LIKELIHOODS = ("vapnev", "vae_flow", "realnvp")
DTYPES = ("float32", "float64")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Every architectural number of the model; defaults are the paper's (Sec. 4.2).

  likelihood:
    "vapnev"          conditional flow (Eq. 16) with decoder base N(mu_y, sigma_y)   (the paper)
    "vae_flow"        the same flow not conditioned on z (Fig. 1's dotted line)
    "pixel_gaussian"  classic VAE: diagonal Gaussian on pixels / 256
    "pixel_logistic"  classic VAE: discretised logistic on the 256 pixel levels
    "realnvp"         no VAE: the unconditional flow with a standard-normal base
  All give a bound on -log p(x) over dequantised x in [0, 256)^D, so bits/dim are comparable.
  """

  image_shape: tuple = (28, 28, 1)
  likelihood: str = "vapnev"
  latent_dim: int = 256
  # Encoder: `encoder_blocks` blocks of `encoder_layers_per_block` 3x3 convs; the first conv of a
  # block halves the resolution; filters start at `encoder_filters` and double per block
  # (4 x 2 = 8 layers, 32 -> 256 filters). The decoder mirrors it.
  encoder_filters: int = 32
  encoder_blocks: int = 4
  encoder_layers_per_block: int = 2
  # Flow (Sec. 4.2): 2 scales of 3 checkerboard + 3 channel-wise couplings, 64 filters doubled per
  # scale, 2 residual blocks in l1/m1.
  flow_scales: int = 2
  flow_checkerboard: int = 3
  flow_channelwise: int = 3
  flow_filters: int = 64
  flow_res_blocks: int = 2
  log_scale_bound: float = 3.0
  logit_alpha: float = 0.05
  min_scale: float = 1e-3
  dtype: str = "float32"

  def __post_init__(self):
    shape = tuple(int(d) for d in self.image_shape) if _is_sequence(self.image_shape) else None
    if shape is None or len(shape) != 3 or min(shape) <= 0:
      raise ValueError(f"image_shape must be (H, W, C) with positive ints, got {self.image_shape!r}.")
    object.__setattr__(self, "image_shape", shape)
    _check_choice("likelihood", self.likelihood, LIKELIHOODS)
    _check_choice("dtype", self.dtype, DTYPES)
    for name in ("latent_dim", "encoder_filters", "encoder_blocks", "encoder_layers_per_block",
                 "flow_scales", "flow_filters"):
      _check_int(name, getattr(self, name), minimum=1)
    for name in ("flow_checkerboard", "flow_channelwise", "flow_res_blocks"):
      _check_int(name, getattr(self, name), minimum=0)
    if self.uses_flow and self.flow_checkerboard + self.flow_channelwise == 0:
      raise ValueError("flow_checkerboard + flow_channelwise must be >= 1 for a flow likelihood.")
    if not 0.0 <= self.logit_alpha < 0.5:
      raise ValueError(f"logit_alpha must be in [0, 0.5), got {self.logit_alpha!r}.")
    if not self.log_scale_bound > 0:
      raise ValueError(f"log_scale_bound must be > 0, got {self.log_scale_bound!r}.")
    if not self.min_scale > 0:
      raise ValueError(f"min_scale must be > 0, got {self.min_scale!r}.")
    if self.uses_flow:
      from vapnev_tf.flow import check_flow_geometry  # pylint: disable=g-import-not-at-top
      check_flow_geometry(shape, self.flow_scales)

  @property
  def uses_flow(self) -> bool:
    return self.likelihood in FLOW_LIKELIHOODS

  @property
  def has_vae(self) -> bool:
    return self.likelihood != "realnvp"

  @property
  def num_dims(self) -> int:
    h, w, c = self.image_shape
    return h * w * c

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> "ModelConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
      raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}; expected a subset of "
                       f"{sorted(known)}.")
    return cls(**values)


def _is_sequence(value) -> bool:
  try:
    return len(value) >= 0 and not isinstance(value, str)
  except TypeError:
    return False


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def _check_int(name, value, minimum):
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
