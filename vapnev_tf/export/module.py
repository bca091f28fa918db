"""The exported object: tensor-in/tensor-out signatures of a trained VAPNEV (docs/design.md §11).

The SavedModel is a `VapnevModule`: a `tf.Module` that uses the Keras model and tracks the
tf.Variables under its Keras 3 variables (`model_variables`; see `VapnevModule.__init__` for why not
the Keras objects), with one `tf.function` per endpoint, registered as signatures. Nothing in it is a
Distribution: every endpoint takes and returns tensors, and the artefact loads with TensorFlow alone
(`vapnev_tf`, TFP and Keras need not be importable), in TF2 (`tf.saved_model.load`) and in
TF1-style loaders (`saved_model_cli run`, TF Serving):

  signature             inputs                                 outputs
  sample                num_samples int32 [],                  images uint8 (n, H, W, C),
                        temperature float32 [], seed int64 []  samples float32 (n, H, W, C)
  reconstruct           images uint8 (B, H, W, C),             images uint8, samples float32
                        seed int64 []                          (B, H, W, C)
  log_likelihood_bound  images uint8 (B, H, W, C),             log_likelihood float32 (B,) nats,
                        num_samples int32 [], seed int64 []    bits_per_dim float32 (B,)
  encode                images uint8 (B, H, W, C)              mu_z, sigma_z float32 (B, latent)
  decode                z float32 (B, latent)                  images uint8, samples float32
  sample_from_z         z float32 (B, latent),                 images uint8, samples float32
                        temperature float32 [], seed int64 []  (B, H, W, C)

`decode` is the mu_y path of z; `sample_from_z` draws y ~ N(mu_y, (temperature sigma_y)^2) for the
given z, so one z repeated in the batch gives as many flow-noise draws of that z.
`likelihood="realnvp"` models have no encoder/decoder: only `sample` and `log_likelihood_bound` (the
exact log p(x); `num_samples` is ignored) are exported. `samples` are the float pixels in [0, 256)
before flooring to uint8. `temperature` scales sigma_y (0 gives the mu_y path of the flow
likelihoods). H, W, C are fixed by the model, the batch is free; a wrong shape or dtype is refused
when the signature is called (dtype on entry, shape by an assertion naming the expected shape).
A SavedModel signature has one dtype per input, so `signatures[...]` take an int64 seed (a Python
int converts); the restored functions (`loaded.sample(...)`, `loaded.reconstruct(...)`,
`loaded.log_likelihood_bound(...)`) also take an int32 one (`tf.constant(0)`), with the same result.

Seeding (so the export gives the in-Python model's numbers for the same seed):
  1. the int64 `seed` becomes a stateless pair: `stateless_seed(seed)` (its two 32-bit halves);
  2. `derive_seeds(seed)` splits that pair into `(dequantize_seed, model_seed)`
     (`tfp.random.split_seed(pair, n=2)`);
  3. uint8 images are dequantised by `vapnev_tf.data.dequantize(images, dequantize_seed)`
     (x = pixel + u, u ~ U[0, 1)); `encode` has no seed and uses the bin centres x = pixel + 0.5;
  4. `model_seed` is the TFP seed of the model's own method: the signatures equal
     `model.sample(n, temperature, seed=model_seed)`, `model.reconstruct(x, seed=model_seed)`,
     `model.sample_from_z(z, temperature, seed=model_seed)` and
     `model.log_likelihood_bound(x, k, seed=model_seed)` (k may be a tensor: it is a graph loop).
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import data as data_lib
from vapnev_tf import validation
from vapnev_tf.metrics import bits_per_dim
from vapnev_tf.model import VAPNEV
from vapnev_tf.model import to_uint8

VAE_SIGNATURES = ("sample", "reconstruct", "log_likelihood_bound", "encode", "decode",
                  "sample_from_z")
FLOW_SIGNATURES = ("sample", "log_likelihood_bound")


# --------------------------------------------------------------------------------------- seeding


def stateless_seed(seed) -> tf.Tensor:
  """An int64 or int32 scalar (tensor or Python int) -> a stateless seed, int32 `[2]` (the 32-bit
  halves of its int64 value, so int32 and int64 seeds of the same value agree)."""
  seed = tf.convert_to_tensor(seed)
  if seed.dtype == tf.int32:
    seed = tf.cast(seed, tf.int64)
  seed = tf.convert_to_tensor(seed, dtype=tf.int64)
  if seed.shape.rank != 0:
    raise ValueError(f"seed must be an int64 scalar, got shape {tuple(seed.shape)}.")
  return tf.bitcast(seed, tf.int32)


def derive_seeds(seed):
  """`(dequantize_seed, model_seed)`, each int32 `[2]`, from an int64 scalar `seed`.

  Every signature derives its randomness this way; call it with the same seed to reproduce an
  exported result with the in-Python model (module docstring, "Seeding").
  """
  dequantize_seed, model_seed = tfp.random.split_seed(stateless_seed(seed), n=2)
  return dequantize_seed, model_seed


def bin_centres(images_uint8, dtype=tf.float32):
  """uint8 pixels -> the centres of their dequantisation bins, pixel + 0.5 (deterministic)."""
  return tf.cast(images_uint8, dtype) + tf.constant(0.5, dtype)


# -------------------------------------------------------------------------------- the tf.Module


class VapnevModule(tf.Module):
  """The exported object: one `tf.function` per signature over a Keras model, and its variables.

  `model` is reachable as an attribute but is not a SavedModel dependency; the tf.Variables are
  (`model_variables`). The functions are also usable in Python (e.g. by `vapnev_tf.figures`), so
  figures made from a run directory and from its export are the same for the same seed.

  Args:
    model: a `VAPNEV`.
  """

  def __init__(self, model: VAPNEV, name: str = "vapnev"):
    if not isinstance(model, VAPNEV):
      raise ValueError(f"model must be a vapnev_tf.VAPNEV, got {type(model).__name__}.")
    super().__init__(name=name)
    self._set_model(model)
    # The SavedModel tracks the tf.Variables under the Keras 3 variables, not the Keras objects:
    # a Keras 3 Variable exports as a *copy* of its tf.Variable, so the functions (which read the
    # tf.Variable) and the saver (which restores the copy) would use different resources and
    # TF1-style loaders (saved_model_cli run, TF Serving) would find the weights uninitialised.
    self.model_variables = [_tf_variable(v) for v in model.variables]
    cfg = model.config
    self.signature_names = VAE_SIGNATURES if cfg.has_vae else FLOW_SIGNATURES
    images = tf.TensorSpec((None,) + cfg.image_shape, tf.uint8, name="images")
    seed = tf.TensorSpec([], tf.int64, name="seed")
    seed32 = tf.TensorSpec([], tf.int32, name="seed")
    num_samples = tf.TensorSpec([], tf.int32, name="num_samples")
    temperature = tf.TensorSpec([], tf.float32, name="temperature")
    # Seeded endpoints are traced for an int64 and an int32 seed, so the restored functions
    # (`loaded.sample(..., seed=tf.constant(0))`) take either; a signature has one dtype per input
    # and uses the int64 trace.
    self.sample = _traced(self._sample, [num_samples, temperature], seed, seed32)
    self.log_likelihood_bound = _traced(self._log_likelihood_bound, [images, num_samples], seed,
                                        seed32)
    if cfg.has_vae:
      z = tf.TensorSpec([None, cfg.latent_dim], tf.float32, name="z")
      self.reconstruct = _traced(self._reconstruct, [images], seed, seed32)
      self.encode = tf.function(self._encode, input_signature=[images])
      self.decode = tf.function(self._decode, input_signature=[z])
      self.sample_from_z = _traced(self._sample_from_z, [z, temperature], seed, seed32)
    self._signature_specs = {"sample": [num_samples, temperature, seed],
                             "log_likelihood_bound": [images, num_samples, seed],
                             "reconstruct": [images, seed], "encode": [images],
                             "decode": [z] if cfg.has_vae else None,
                             "sample_from_z": [z, temperature, seed] if cfg.has_vae else None}

  @property
  def model(self) -> VAPNEV:
    return self._model

  @tf.__internal__.tracking.no_automatic_dependency_tracking
  def _set_model(self, model):
    self._model = model  # not a SavedModel dependency: see model_variables

  def signatures(self) -> dict:
    """{name: concrete function} for `tf.saved_model.save(..., signatures=...)`."""
    return {name: getattr(self, name).get_concrete_function(*self._signature_specs[name])
            for name in self.signature_names}

  # The bodies. Argument names are the signatures' input names.

  def _sample(self, num_samples, temperature, seed):
    num_samples = _checked(num_samples, tf.debugging.assert_positive, "sample: num_samples >= 1")
    num_samples = validation.check_count(  # n * max(H*W*C, latent) must fit int32
        num_samples, "sample: num_samples", self.model.max_samples)
    temperature = _checked(temperature, tf.debugging.assert_non_negative,
                           "sample: temperature >= 0")
    _, model_seed = derive_seeds(seed)
    x = self.model.sample(num_samples, tf.cast(temperature, self.model.compute_dtype),
                          seed=model_seed)
    return _image_outputs(x)

  def _reconstruct(self, images, seed):
    dequantize_seed, model_seed = derive_seeds(seed)
    x = self._dequantize(images, dequantize_seed)
    return _image_outputs(self.model.reconstruct(x, seed=model_seed))

  def _log_likelihood_bound(self, images, num_samples, seed):
    num_samples = _checked(num_samples, tf.debugging.assert_positive,
                           "log_likelihood_bound: num_samples >= 1")
    dequantize_seed, model_seed = derive_seeds(seed)
    x = self._dequantize(images, dequantize_seed)
    log_likelihood = self.model.log_likelihood_bound(x, num_samples, model_seed)
    return {"log_likelihood": tf.cast(log_likelihood, tf.float32),
            "bits_per_dim": tf.cast(bits_per_dim(log_likelihood, self.model.config.image_shape),
                                    tf.float32)}

  def _encode(self, images):
    # the encoder's Gaussian (Eq. 17-19): q(z|x) itself, or its base before posterior="iaf"'s steps
    mu_z, sigma_z = self.model.encode_moments(
        bin_centres(self._checked_images(images), self.model.compute_dtype))
    return {"mu_z": tf.cast(mu_z, tf.float32), "sigma_z": tf.cast(sigma_z, tf.float32)}

  def _decode(self, z):
    return _image_outputs(self.model.decode_images(tf.cast(z, self.model.compute_dtype)))

  def _sample_from_z(self, z, temperature, seed):
    temperature = _checked(temperature, tf.debugging.assert_non_negative,
                           "sample_from_z: temperature >= 0")
    _, model_seed = derive_seeds(seed)
    x = self.model.sample_from_z(tf.cast(z, self.model.compute_dtype),
                                 tf.cast(temperature, self.model.compute_dtype), seed=model_seed)
    return _image_outputs(x)

  def _dequantize(self, images, seed):
    x = data_lib.dequantize(self._checked_images(images), seed)  # float32 (B, H, W, C)
    return tf.cast(x, self.model.compute_dtype)

  def _checked_images(self, images):
    """Checks the shape at run time too: `signatures[...]` calls bypass the input_signature."""
    expected = self.model.config.image_shape
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)[:4]
    ok = tf.logical_and(tf.equal(tf.size(shape), 4),
                        tf.reduce_all(tf.equal(padded[1:], tf.constant(expected, tf.int32))))
    message = f"images must be uint8 of shape (batch, {', '.join(map(str, expected))}), got shape"
    with tf.control_dependencies([tf.debugging.Assert(ok, [message, shape])]):
      return tf.identity(images)


def _traced(body, specs, seed64, seed32):
  """`tf.function(body)` with concrete functions for both seed dtypes (the seed comes last)."""
  function = tf.function(body)
  function.get_concrete_function(*specs, seed64)
  function.get_concrete_function(*specs, seed32)
  return function


def _tf_variable(variable):
  """The `tf.Variable` behind a Keras 3 variable (or `variable` itself)."""
  return getattr(variable, "value", variable) if isinstance(variable, keras.Variable) else variable


def _checked(value, assertion, message):
  with tf.control_dependencies([assertion(value, message=message)]):
    return tf.identity(value)


def _image_outputs(x):
  """Float pixels in [0, 256) -> {"images": uint8, "samples": float32}."""
  return {"images": to_uint8(x), "samples": tf.cast(x, tf.float32)}
