"""Tiny models, a real Fashion-MNIST batch and a compiled training step for the model tests."""
import gzip
import os

import keras
import numpy as np
import tensorflow as tf

import vapnev_tf

FASHION_IMAGES = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def tiny_config(image_shape=(28, 28, 1), likelihood="vapnev", **overrides):
  values = dict(image_shape=image_shape, likelihood=likelihood, latent_dim=8, encoder_filters=4,
                flow_filters=4, flow_checkerboard=1, flow_channelwise=1, flow_res_blocks=1)
  values.update(overrides)
  return vapnev_tf.ModelConfig(**values)


def real_batch(n=32, seed=0):
  """n dequantised Fashion-MNIST training images `(n, 28, 28, 1)` (generated if Debian's files
  are absent, which `make test` prevents by installing them)."""
  rng = np.random.default_rng(seed)
  if os.path.exists(FASHION_IMAGES):
    with gzip.open(FASHION_IMAGES) as f:
      raw = np.frombuffer(f.read(16 + n * 784), np.uint8, offset=16).reshape(n, 28, 28, 1)
  else:
    raw = (rng.uniform(size=(n, 28, 28, 1)) ** 3 * 255).astype(np.uint8)
  x = raw.astype(np.float32) + rng.uniform(size=raw.shape).astype(np.float32)
  return tf.constant(np.minimum(x, np.nextafter(np.float32(256), np.float32(0))))


def train(model, x, steps, learning_rate=2e-3, seed=0, kl_weight=1.0):
  """Adam on the negative ELBO (KL weighted by `kl_weight`) of a fixed batch; returns the losses."""
  optimizer = keras.optimizers.Adam(learning_rate)

  @tf.function
  def step(i):
    with tf.GradientTape() as tape:
      loss = -tf.reduce_mean(model.elbo(x, kl_weight=kl_weight, seed=tf.stack([seed, i])))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return np.array([float(step(tf.constant(i))) for i in range(steps)])


def assert_every_weight_trains_and_survives_a_checkpoint(model, make_clone, x, tmp_path,
                                                        clone_differs=False):
  """Every trainable weight of `model` gets a non-zero gradient of the negative ELBO on `x`, and a
  `make_clone()` restored from `model`'s checkpoint gives its IW bound bit for bit (and, with
  `clone_differs`, a different one before the restore)."""
  with tf.GradientTape() as tape:
    loss = -tf.reduce_mean(model.elbo(x, seed=(1, 2)))
  grads = tape.gradient(loss, model.trainable_variables)
  for v, g in zip(model.trainable_variables, grads):
    assert g is not None and float(tf.norm(g)) > 0, v.path
  before = model.log_likelihood_bound(x, 3, seed=(4, 4)).numpy()
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  clone = make_clone()
  if clone_differs:
    assert not np.array_equal(clone.log_likelihood_bound(x, 3, seed=(4, 4)), before)
  tf.train.Checkpoint(model=clone).restore(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(clone.log_likelihood_bound(x, 3, seed=(4, 4)), before)
