"""`PixelDistribution`: p(x|z) as a TFP distribution whose batch is z's, of any rank.

The encoder, decoder and flow are convolutional and take one batch dimension. This distribution
keeps z `(*batch, latent_dim)` and, in `log_prob(x)`, broadcasts x `(*sample, H, W, C)` and z
against each other TFP-style, flattens the broadcast batch to rank 1, evaluates the likelihood's
flat distribution there (`make_flat(z_flat)`, batch `[N]`) and reshapes back:

    p_x_given_z(z[k, B, L]).log_prob(x[B, H, W, C])  ->  [k, B]
    p_x_given_z(z[3, L]).log_prob(x[1, H, W, C])     ->  [3]

Without a VAE (z None) the flat distribution has batch `[]` and x's batch is the result's.
"""
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import validation

tfd = tfp.distributions


class PixelDistribution(tfd.Distribution):
  """p(x|z) over dequantised pixels x in [0, 256)^(H, W, C): batch `z.shape[:-1]`, event
  `(H, W, C)`.

  Checks on x (in `log_prob`/`prob`), following TFP's `validate_args`:
    * always (static, free): x's dtype must be this distribution's float dtype (integer images:
      use `vapnev_tf.data.dequantize`; float tensors of another dtype are refused, not cast) and its
      trailing shape `(H, W, C)`;
    * with `validate_args=True`: every value in [0, 256) (NaN refused), a ValueError when eager
      and an assertion op in a graph. Without it, out-of-range x gives whatever the formula
      gives: the flows' density lives on the logit squash's support box, slightly wider than
      [0, 256) (docs/design.md §1), and is NaN beyond it.

  Args:
    make_flat: `z_flat (N, latent_dim)` (or None) -> a distribution with batch `[N]` (`[]` for
      None) and event `image_shape` (e.g. `Likelihood.distribution` of the decoded z).
    z: `(*batch, latent_dim)` tensor, or None without a VAE.
    image_shape: `(H, W, C)`.
    dtype: float dtype of x.
    reparameterization_type: of samples (as the flat distribution's).
  """

  def __init__(self, make_flat, z, image_shape, dtype, reparameterization_type,
               validate_args=True, name="p_x_given_z"):
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      self._make_flat = make_flat
      self._z = z
      self._image_shape = tuple(int(d) for d in image_shape)
      super().__init__(dtype=dtype, reparameterization_type=reparameterization_type,
                       validate_args=validate_args, allow_nan_stats=True, parameters=parameters,
                       name=name)

  @property
  def z(self):
    return self._z

  def _batch_shape(self):
    return tf.TensorShape([]) if self._z is None else self._z.shape[:-1]

  def _batch_shape_tensor(self):
    return tf.zeros([0], tf.int32) if self._z is None else tf.shape(self._z)[:-1]

  def _event_shape(self):
    return tf.TensorShape(self._image_shape)

  def _event_shape_tensor(self):
    return tf.constant(self._image_shape, tf.int32)

  def log_prob(self, value, name="log_prob", **kwargs):
    """log p(x|z) in nats, shape `broadcast(x.shape[:-3], batch_shape)` (Eq. 10-11, 20-22)."""
    return super().log_prob(self._checked(value), name=name, **kwargs)

  def prob(self, value, name="prob", **kwargs):
    return super().prob(self._checked(value), name=name, **kwargs)

  def _checked(self, x):
    return validation.check_pixels(x, self._image_shape, "x", self.dtype,
                                   check_values=self.validate_args)

  def _log_prob(self, x):
    x_batch = tf.shape(x)[:-3]
    image_shape = tf.constant(self._image_shape, tf.int32)
    static = tf.broadcast_static_shape(x.shape[:-3], self.batch_shape)
    if self._z is None:  # the flat distribution has batch []
      flat_x = tf.reshape(x, tf.concat([[-1], image_shape], 0))
      log_prob = tf.reshape(self._make_flat(None).log_prob(flat_x), x_batch)
      log_prob.set_shape(static)
      return log_prob
    batch = tf.broadcast_dynamic_shape(x_batch, self.batch_shape_tensor())
    flat_x = tf.reshape(tf.broadcast_to(x, tf.concat([batch, image_shape], 0)),
                        tf.concat([[-1], image_shape], 0))  # (N, H, W, C)
    latent_dim = tf.shape(self._z)[-1:]
    flat_z = tf.reshape(tf.broadcast_to(self._z, tf.concat([batch, latent_dim], 0)),
                        tf.concat([[-1], latent_dim], 0))  # (N, latent_dim)
    log_prob = tf.reshape(self._make_flat(flat_z).log_prob(flat_x), batch)
    log_prob.set_shape(static)
    return log_prob

  def _sample_n(self, n, seed=None):
    if self._z is None:
      return self._make_flat(None).sample(n, seed=seed)  # (n, H, W, C)
    flat_z = tf.reshape(self._z, tf.concat([[-1], tf.shape(self._z)[-1:]], 0))
    samples = self._make_flat(flat_z).sample(n, seed=seed)  # (n, N, H, W, C)
    return tf.reshape(samples, tf.concat([[n], self.batch_shape_tensor(),
                                          tf.constant(self._image_shape, tf.int32)], 0))

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    # z carries the batch (so e.g. p[1:] slices z); the rest are not tensors.
    return dict(z=tfp.util.ParameterProperties(event_ndims=1))
