"""Numerical stability: couplings driven to extreme log-scales keep log p(x) and the bound finite."""
import numpy as np
import tensorflow as tf

import flow_fixtures as ff
import model_fixtures as mf
import vapnev_tf


def _drive_to_extremes(layer, value):
  for v in layer.trainable_variables:
    if v.path.split("/")[-1].startswith(("alpha_", "beta1_", "beta2_", "b_")):
      v.assign(tf.fill(v.shape, tf.constant(value, v.dtype)))


def test_extreme_coupling_parameters_keep_the_bound_finite():
  model = vapnev_tf.VAPNEV(mf.tiny_config((8, 8, 1), encoder_blocks=2))
  x = ff.pixels((4, 8, 8, 1))
  for value in (1e4, -1e4):
    _drive_to_extremes(model.flow, value)
    elbo = model.elbo(x, seed=(1, 2))
    bound = model.log_likelihood_bound(x, num_samples=4, seed=(1, 2))
    assert np.all(np.isfinite(elbo)) and np.all(np.isfinite(bound)), value
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.elbo(x, seed=(1, 2)))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(np.all(np.isfinite(g)) for g in grads if g is not None)


def test_log_scale_never_exceeds_its_bound():
  flow = ff.make_flow((4, 4, 1))
  _drive_to_extremes(flow, 1e6)
  net = flow.coupling_networks()[0]
  x_in = tf.concat([ff.pixels((2, 4, 4, 1), low=-3, high=3), tf.ones((2, 4, 4, 1))], axis=-1)
  _, log_scale = net(x_in, ff.latents((2,)))
  assert float(tf.reduce_max(tf.abs(log_scale))) <= net.log_scale_bound + 1e-6
