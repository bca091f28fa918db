"""Distributions over dequantised pixels x in [0, 256)^(H, W, C), with the checks on x of p(x|z).

`PixelTransformedDistribution` is a `tfd.TransformedDistribution` (base over y, bijector y -> x)
whose `log_prob`/`prob` first check x (`PixelChecks`); the flows' p(x|z) and the pixel Gaussian are
ones. `UniformDequantized` turns a distribution over the 256 integer levels into a density: each
level's mass is spread uniformly over [k, k+1), p(x) = P(floor(x)). This is the density that uniform
dequantisation bounds (Theis et al.), so its bits/dim are comparable with the flows'.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import validation

tfd = tfp.distributions


class PixelChecks:
  """Checks on x in `log_prob`/`prob` of a distribution over dequantised pixels, following TFP's
  `validate_args`:

    * always (static, free): x's dtype must be the distribution's float dtype (integer images:
      use `vapnev_tf.data.dequantize`; float tensors of another dtype are refused, not cast) and
      its trailing shape the event shape `(H, W, C)`;
    * with `validate_args=True`: every value in [0, 256) (NaN refused), a ValueError when eager
      and an assertion op in a graph. Without it, out-of-range x gives whatever the formula
      gives: the flows' density lives on the logit squash's support box, slightly wider than
      [0, 256) (docs/design.md §1), and is NaN beyond it.

  Mixed in before a `tfd.Distribution` subclass; the check runs before TFP converts x.
  """

  def log_prob(self, value, name="log_prob", **kwargs):
    """log p(x) in nats, shape `broadcast(x.shape[:-3], batch_shape)`."""
    return super().log_prob(self._checked(value), name=name, **kwargs)

  def prob(self, value, name="prob", **kwargs):
    return super().prob(self._checked(value), name=name, **kwargs)

  def _checked(self, x):
    return validation.check_pixels(x, tuple(self.event_shape), "x", self.dtype,
                                   check_values=self.validate_args)


class PixelTransformedDistribution(PixelChecks, tfd.TransformedDistribution):
  """`TransformedDistribution(distribution, bijector)` over pixels, with `PixelChecks` on x.

  Args:
    distribution: the base over y, event `(H, W, C)`, e.g. `Independent(Normal(mu_y, sigma_y), 3)`.
    bijector: y -> x, e.g. `ConditionalRealNVP.to_pixels(z)` or `tfb.Scale(256)`.
    validate_args: TFP's flag; here it also turns on the value check of x.
    name: the distribution's name.
  """

  def __init__(self, distribution, bijector, validate_args=True, name="p_x_given_z"):
    parameters = dict(locals())
    super().__init__(distribution, bijector, validate_args=validate_args, parameters=parameters,
                     name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    # TransformedDistribution's: batch slicing slices the base and the bijector (whose conditioning
    # z is a parameter of each coupling), so `p[0]` is p(x|z[0]).
    return tfd.TransformedDistribution._parameter_properties(dtype, num_classes=num_classes)


class UniformDequantized(PixelChecks, tfd.Distribution):
  """p(x) = P(floor(x)) for x in [0, 256)^D, with P a distribution over integer pixel levels.

  Args:
    discrete: a distribution over integer-valued images (event `(H, W, C)`), e.g. an
      `Independent(QuantizedDistribution(...))`.
    validate_args: TFP's flag; here it turns on the value check of x (`PixelChecks`).
  """

  def __init__(self, discrete, validate_args=False, name="UniformDequantized"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._discrete = discrete
      super().__init__(dtype=discrete.dtype, reparameterization_type=tfd.NOT_REPARAMETERIZED,
                       validate_args=validate_args, allow_nan_stats=True, parameters=parameters,
                       name=name)

  @property
  def discrete(self):
    return self._discrete

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(discrete=tfp.util.BatchedComponentProperties())

  def _event_shape(self):
    return self._discrete.event_shape

  def _event_shape_tensor(self):
    return self._discrete.event_shape_tensor()

  def _log_prob(self, x):
    return self._discrete.log_prob(tf.floor(x))

  def _sample_n(self, n, seed=None):
    discrete_seed, noise_seed = tfp.random.split_seed(seed)
    levels = self._discrete.sample(n, seed=discrete_seed)
    return levels + tf.random.stateless_uniform(tf.shape(levels), seed=noise_seed,
                                                dtype=levels.dtype)


def discretized_logistic(loc, scale, validate_args=False):
  """Discretised logistic over levels 0..255 (edge levels take the tails), event `(H, W, C)`.

  Args:
    loc, scale: `(*batch, H, W, C)` in pixel units.
    validate_args: whether `log_prob` checks x's values (`PixelChecks`).
  """
  levels = tfd.QuantizedDistribution(tfd.Logistic(loc, scale), low=0.0, high=255.0)
  return UniformDequantized(tfd.Independent(levels, reinterpreted_batch_ndims=3),
                            validate_args=validate_args, name="p_x_given_z")
