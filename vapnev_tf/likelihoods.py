"""The six choices of p(x|z) (`ModelConfig.likelihood`) as small stateless objects, one interface.

Every likelihood is a density over dequantised pixels x in [0, 256)^(H, W, C), so all bits/dim are
comparable (docs/design.md §1). A likelihood says

  * `needs_vae`        whether there is an encoder/decoder (and so a z),
  * `fixed_latent`     without a VAE, whether the decoder and the conditional flow are still
                       evaluated, at one fixed z (their outputs are then learned biases),
  * `uses_flow`        whether p(x|z) goes through the real-NVP flow f_z, and
    `conditional_flow` whether f_z depends on z (Eq. 16) or only on x (Fig. 1's dotted line),
  * `parameters(head_mean, head_scale, min_scale)`  the decoder's two heads -> its parameters,
  * `distribution(params, bijector, temperature, validate_args)`  p(x|z), batch z's batch shape,
  * `mean_image(params, bijector)`                   the deterministic image (the mu_y path).

They hold no weights: the encoder, decoder and flow are Keras layers owned by `VAPNEV`, which calls
them and hands their outputs (`params`, and `bijector` = `ConditionalRealNVP.to_pixels(z)`, y -> x)
in here. Every p(x|z) checks x in `log_prob` (`vapnev_tf.pixel_distributions.PixelChecks`).
`LIKELIHOODS` maps each name to its class; `VAPNEV` picks one once, in `__init__`.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf.pixel_distributions import PixelTransformedDistribution
from vapnev_tf.pixel_distributions import discretized_logistic

tfb = tfp.bijectors
tfd = tfp.distributions


class Likelihood:
  """The interface (and the defaults of the Gaussian-base likelihoods).

  Args:
    image_shape: `(H, W, C)`.
    dtype: the model's compute dtype.
  """

  name = None
  needs_vae = True
  fixed_latent = False
  uses_flow = False
  conditional_flow = False
  reparameterization_type = tfd.FULLY_REPARAMETERIZED

  def __init__(self, image_shape, dtype="float32"):
    self.image_shape = tuple(int(d) for d in image_shape)
    self.dtype = tf.as_dtype(dtype)

  def parameters(self, head_mean, head_scale, min_scale: float):
    """Decoder heads `(*batch, H, W, C)` -> (loc, scale), each of that shape (Eq. 20-21).

    scale = softplus(head_scale) + min_scale (docs/design.md §6).
    """
    return head_mean, tf.nn.softplus(head_scale) + min_scale

  def distribution(self, params, bijector, temperature, validate_args=True):
    """p(x|z) with batch `z.shape[:-1]` (`[]` without a VAE), event `image_shape`, over [0, 256).

    Args:
      params: `parameters(...)` of the decoder at z `(*batch, latent_dim)`, each
        `(*batch, H, W, C)`; at the fixed z `(latent_dim,)` for `fixed_latent`; else None without a
        VAE.
      bijector: f_z^{-1} (y -> pixels, `ConditionalRealNVP.to_pixels`) when `uses_flow`, else None.
      temperature: scales the base distribution's scale; 1 is the model itself.
      validate_args: whether `log_prob` checks x's values (`PixelChecks`).
    """
    raise NotImplementedError

  def mean_image(self, params, bijector):
    """The deterministic image: x = f_z^{-1}(mu_y) for the flows, `(*batch, H, W, C)` (or
    `(H, W, C)` without a VAE), before clipping to [0, 256); `bijector` as in `distribution`."""
    raise NotImplementedError


class _FlowLikelihood(Likelihood):
  """p(x|z) = TransformedDistribution(N(mu_y, T sigma_y), f_z^{-1})  (Eq. 10-11, 20-22)."""

  uses_flow = True

  def distribution(self, params, bijector, temperature, validate_args=True):
    mu_y, sigma_y = params
    base = tfd.Independent(tfd.Normal(mu_y, temperature * sigma_y), reinterpreted_batch_ndims=3,
                           name="p_y_given_z")
    return PixelTransformedDistribution(base, bijector, validate_args=validate_args,
                                        name="p_x_given_z")

  def mean_image(self, params, bijector):
    return bijector.forward(params[0])


class Vapnev(_FlowLikelihood):
  """The paper: the conditional flow (Eq. 16) with the decoder's base N(mu_y, sigma_y)."""

  name = "vapnev"
  conditional_flow = True


class VaeFlow(_FlowLikelihood):
  """The same flow not conditioned on z (Fig. 1's dotted line); z enters through mu_y, sigma_y."""

  name = "vae_flow"


class RealNVP(Likelihood):
  """No VAE: p(x) = TransformedDistribution(N(0, T^2 I), f^{-1}), batch `[]` (Eq. 10-11)."""

  name = "realnvp"
  needs_vae = False
  uses_flow = True

  def distribution(self, params, bijector, temperature, validate_args=True):
    del params
    zeros = tf.zeros(self.image_shape, self.dtype)
    base = tfd.Independent(tfd.Normal(zeros, temperature * tf.ones_like(zeros)), 3, name="p_y")
    return PixelTransformedDistribution(base, bijector, validate_args=validate_args, name="p_x")

  def mean_image(self, params, bijector):
    del params
    return bijector.forward(tf.zeros(self.image_shape, self.dtype))


class PixelGaussian(Likelihood):
  """Classic VAE: x / 256 ~ N(mean, (T scale)^2) per pixel, i.e. Scale(256) of that Gaussian."""

  name = "pixel_gaussian"

  def distribution(self, params, bijector, temperature, validate_args=True):
    del bijector
    mean, scale = params
    base = tfd.Independent(tfd.Normal(mean, temperature * scale), reinterpreted_batch_ndims=3,
                           name="p_u_given_z")
    to_pixels = tfb.Scale(tf.constant(256.0, self.dtype), name="to_pixels")
    return PixelTransformedDistribution(base, to_pixels, validate_args=validate_args,
                                        name="p_x_given_z")

  def mean_image(self, params, bijector):
    del bijector
    return 256.0 * params[0]


class PixelLogistic(Likelihood):
  """Classic VAE: a discretised logistic on the 256 levels, uniform within each level."""

  name = "pixel_logistic"
  reparameterization_type = tfd.NOT_REPARAMETERIZED

  def parameters(self, head_mean, head_scale, min_scale: float):
    """(loc, scale) in pixel units: loc = 256 sigmoid(head_mean) - 0.5 and scale = 16 (softplus +
    min_scale), which starts near 16 softplus(0) ~ 11 levels."""
    _, scale = super().parameters(head_mean, head_scale, min_scale)
    return 256.0 * tf.sigmoid(head_mean) - 0.5, 16.0 * scale

  def distribution(self, params, bijector, temperature, validate_args=True):
    del bijector
    loc, scale = params
    return discretized_logistic(loc, temperature * scale, validate_args=validate_args)

  def mean_image(self, params, bijector):
    """The centre of the level holding the logistic's location."""
    del bijector
    return tf.floor(tf.clip_by_value(params[0] + 0.5, 0.0, 255.0)) + 0.5


class VapnevFixedZ(Vapnev):
  """VAPNEV with z fixed: no encoder, no KL, no latent (docs/design.md §24).

  The decoder and the conditional flow are those of "vapnev", evaluated at one constant
  z_0 = (1, ..., 1) `(latent_dim,)` (batch `[]`; `VAPNEV.fixed_z`): mu_y, sigma_y and every
  coupling's z features are learned, input-independent biases. p(x) =
  TransformedDistribution(N(mu_y(z_0), T sigma_y(z_0)), f_{z_0}^{-1}) is then an unconditional
  flow with an exact log-likelihood, batch `[]` like "realnvp"'s (Eq. 10-11 at z = z_0).
  """

  name = "vapnev_fixed_z"
  needs_vae = False
  fixed_latent = True


REGISTRY = {cls.name: cls for cls in (Vapnev, VaeFlow, PixelGaussian, PixelLogistic, RealNVP,
                                      VapnevFixedZ)}
LIKELIHOODS = tuple(REGISTRY)
FLOW_LIKELIHOODS = tuple(name for name, cls in REGISTRY.items() if cls.uses_flow)
VAE_LIKELIHOODS = tuple(name for name, cls in REGISTRY.items() if cls.needs_vae)


def make_likelihood(name: str, image_shape, dtype="float32") -> Likelihood:
  """The likelihood object called `name` (one of `LIKELIHOODS`)."""
  if name not in REGISTRY:
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}.")
  return REGISTRY[name](image_shape, dtype)
