"""Pixel-wise likelihoods of the classic VAE baselines, as densities over [0, 256)^D.

A discrete distribution P over the 256 levels becomes a density over dequantised pixels by spreading
each level's mass uniformly over [k, k+1): p(x) = P(floor(x)). This is the density that uniform
dequantisation bounds (Theis et al.), so its bits/dim are comparable with the flows'.
"""
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class UniformDequantized(tfd.Distribution):
  """p(x) = P(floor(x)) for x in [0, 256)^D, with P a distribution over integer pixel levels.

  Args:
    discrete: a distribution over integer-valued images (event `(H, W, C)`), e.g. an
      `Independent(QuantizedDistribution(...))`.
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


def discretized_logistic(loc, scale):
  """Discretised logistic over levels 0..255 (edge levels take the tails), event `(H, W, C)`.

  Args:
    loc, scale: `(B, H, W, C)` in pixel units.
  """
  levels = tfd.QuantizedDistribution(tfd.Logistic(loc, scale), low=0.0, high=255.0)
  return UniformDequantized(tfd.Independent(levels, reinterpreted_batch_ndims=3))
