"""`VAPNEV`: the Keras 3 model holding encoder, decoder and flow (Sec. 3, Fig. 1).

    q(z|x)  = N(mu_z, sigma_z),  (mu_z, sigma_z) = encoder(x)                      (Eq. 17-19)
    p(z)    = N(0, I)
    p(x|z)  = TransformedDistribution(N(mu_y, sigma_y), Invert(f_z)),
              (mu_y, sigma_y) = decoder(z), f_z = ConditionalRealNVP.bijector(z)   (Eq. 10-11, 20-22)
    ELBO    = log p(x|z) - KL(q(z|x) || p(z)),  z ~ q(z|x)                          (Eq. 1)

x is always dequantised pixels in [0, 256); every pre-processing log-det is inside p(x|z), so
`bits_per_dim(elbo, image_shape)` is directly comparable with the literature.
"""
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import validation
from vapnev_tf.config import ModelConfig
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.networks import Decoder
from vapnev_tf.networks import Encoder
from vapnev_tf.pixel_distributions import discretized_logistic

tfb = tfp.bijectors
tfd = tfp.distributions

_MAX_PIXEL = 256.0 - 2.0 ** -8  # largest float32 image value we emit (< 256, exactly representable)


class VAPNEV(keras.Model):
  """VAPNEV and its baselines (selected by `config.likelihood`), one code path.

  Args:
    config: a `ModelConfig`.
  """

  def __init__(self, config: ModelConfig, **kwargs):
    if not isinstance(config, ModelConfig):
      raise ValueError(f"config must be a vapnev_tf.ModelConfig, got {type(config).__name__}.")
    super().__init__(dtype=config.dtype, **kwargs)
    self.config = config
    if config.has_vae:
      self.encoder = Encoder(config.latent_dim, config.encoder_filters, config.encoder_blocks,
                             config.encoder_layers_per_block, config.min_scale,
                             compute_dtype=config.compute_dtype, dtype=config.dtype,
                             name="encoder")
      self.decoder = Decoder(config.image_shape, config.encoder_filters, config.encoder_blocks,
                             config.encoder_layers_per_block, num_heads=2, dtype=config.dtype,
                             compute_dtype=config.compute_dtype, name="decoder")
    if config.uses_flow:
      self.flow = ConditionalRealNVP(
          config.image_shape, latent_dim=config.latent_dim, num_scales=config.flow_scales,
          num_checkerboard=config.flow_checkerboard, num_channelwise=config.flow_channelwise,
          filters=config.flow_filters, num_res_blocks=config.flow_res_blocks,
          conditional=config.likelihood == "vapnev", log_scale_bound=config.log_scale_bound,
          logit_alpha=config.logit_alpha, conditioning=config.conditioning,
          fused_networks=config.fused_networks, compute_dtype=config.compute_dtype,
          dtype=config.dtype, name="flow")
    self._build_weights()

  def _build_weights(self):
    x = tf.fill((1,) + self.config.image_shape, tf.constant(128.0, self.compute_dtype))
    self.elbo(x, seed=(0, 0))
    self.built = True

  # --- distributions -------------------------------------------------------------------------

  @property
  def prior(self):
    """p(z) = N(0, I), event `(latent_dim,)`."""
    zeros = tf.zeros([self.config.latent_dim], self.compute_dtype)
    return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros), name="prior")

  def encode(self, x):
    """q(z|x) (Eq. 17-19): batch `[B]`, event `[latent_dim]`; x `(B, H, W, C)` in [0, 256)."""
    self._require_vae("encode")
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    mu_z, sigma_z = self.encoder(x)
    return tfd.MultivariateNormalDiag(loc=mu_z, scale_diag=sigma_z, name="q_z_given_x")

  def decode(self, z):
    """The decoder's two heads for z `(B, latent_dim)`, each `(B, H, W, C)` (Eq. 20-21).

    Flow likelihoods: (mu_y, sigma_y) of y's Gaussian. pixel_gaussian: (mean, scale) of pixels/256.
    pixel_logistic: (loc, scale) in pixel units.
    """
    self._require_vae("decode")
    z = validation.check_latent(z, self.config.latent_dim, dtype=self.compute_dtype)
    head_mean, head_scale = self.decoder(z)
    scale = tf.nn.softplus(head_scale) + self.config.min_scale
    if self.config.likelihood == "pixel_logistic":
      # Location in pixel units; scale starts near 16 * softplus(0) ~ 11 levels.
      return 256.0 * tf.sigmoid(head_mean) - 0.5, 16.0 * scale
    return head_mean, scale

  def p_x_given_z(self, z, temperature=1.0):
    """p(x|z): batch `[B]`, event `image_shape`, over dequantised pixels (Eq. 10-11, 20-22).

    For `likelihood="realnvp"` there is no z: pass None and get the flow's p(x) (batch `[]`).
    `temperature` scales the base scale (sigma_y or the standard normal); 1 is the model itself.
    """
    cfg = self.config
    if cfg.likelihood == "realnvp":
      zeros = tf.zeros(cfg.image_shape, self.compute_dtype)
      base = tfd.Independent(tfd.Normal(zeros, temperature * tf.ones_like(zeros)), 3)
      return tfd.TransformedDistribution(base, tfb.Invert(self.flow.bijector()), name="p_x")
    loc, scale = self.decode(z)
    scale = temperature * scale
    if cfg.likelihood == "pixel_logistic":
      return discretized_logistic(loc, scale)
    base = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=3, name="p_y_given_z")
    if cfg.likelihood == "pixel_gaussian":
      to_pixels = tfb.Scale(tf.constant(256.0, self.compute_dtype), name="to_pixels")
      return tfd.TransformedDistribution(base, to_pixels, name="p_x_given_z")
    return tfd.TransformedDistribution(base, tfb.Invert(self.flow.bijector(z)),
                                       name="p_x_given_z")

  # --- bounds ----------------------------------------------------------------------------------

  def elbo_terms(self, x, seed=None):
    """One-sample ELBO pieces for x `(B, H, W, C)`: dict of `(B,)` tensors.

    `log_px_given_z` = log p(x|z) at z ~ q(z|x) (reparametrised), `kl` = KL(q(z|x) || p(z))
    analytically. For "realnvp", log_px_given_z is the exact log p(x) and kl is 0.
    """
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    if not self.config.has_vae:
      log_px = self.p_x_given_z(None).log_prob(x)
      return {"log_px_given_z": log_px, "kl": tf.zeros_like(log_px)}
    q = self.encode(x)
    z = q.sample(seed=seed)
    return {"log_px_given_z": self.p_x_given_z(z).log_prob(x),
            "kl": tfd.kl_divergence(q, self.prior)}

  def elbo(self, x, kl_weight=1.0, seed=None):
    """Per-example ELBO in nats, `(B,)` (Eq. 1); `kl_weight` < 1 only for KL annealing."""
    terms = self.elbo_terms(x, seed=seed)
    return terms["log_px_given_z"] - kl_weight * terms["kl"]

  def log_likelihood_bound(self, x, num_samples=1, seed=None, chunk_size: int = 16):
    """Importance-weighted bound (Burda et al.) on log p(x), `(B,)` nats; k = 1 is the ELBO.

        log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)

    Evaluated `chunk_size` samples at a time (a `tf.while_loop`, so `num_samples` may be a Python
    int or an int32 scalar tensor, e.g. in an exported signature): chunk j draws
    min(chunk_size, k - j chunk_size) samples with the j-th of `split_seed(seed, n=num_chunks)`
    (`seed` itself when there is one chunk). For "realnvp" it is the exact log p(x).
    """
    if not tf.is_tensor(num_samples):
      num_samples = validation.check_positive_int(num_samples, "num_samples")
    chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    if not self.config.has_vae:
      return self.p_x_given_z(None).log_prob(x)
    q = self.encode(x)
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    num_chunks = (num_samples + chunk_size - 1) // chunk_size
    chunk_seeds = tf.cond(num_chunks > 1,
                          lambda: tfp.random.split_seed(seed, n=num_chunks),
                          lambda: tf.expand_dims(tfp.random.sanitize_seed(seed), 0))  # (chunks, 2)

    def chunk(j, log_weights):
      n = tf.minimum(chunk_size, num_samples - j * chunk_size)
      z = q.sample(n, seed=chunk_seeds[j])  # (n, B, latent)
      return j + 1, log_weights.write(j, self._log_importance_weights(x, q, z))

    log_weights = tf.TensorArray(self.compute_dtype, size=num_chunks, infer_shape=False,
                                 element_shape=tf.TensorShape([None, None]))
    _, log_weights = tf.while_loop(lambda j, _: j < num_chunks, chunk,
                                   [tf.constant(0), log_weights])
    log_k = tf.math.log(tf.cast(num_samples, self.compute_dtype))
    return tf.reduce_logsumexp(log_weights.concat(), axis=0) - log_k  # over the k samples

  def _log_importance_weights(self, x, q, z):
    """log p(x|z) + log p(z) - log q(z|x) for z `(n, B, latent)`; returns `(n, B)`."""
    n, batch = tf.shape(z)[0], tf.shape(x)[0]
    z_flat = tf.reshape(z, [-1, self.config.latent_dim])
    x_tiled = tf.reshape(tf.tile(x[None], [n, 1, 1, 1, 1]), (-1,) + self.config.image_shape)
    log_px = tf.reshape(self.p_x_given_z(z_flat).log_prob(x_tiled), [n, batch])
    return log_px + self.prior.log_prob(z) - q.log_prob(z)

  def call(self, x, training=False):
    """Per-example ELBO `(B,)` in nats (so `model(x)` is meaningful for Keras tooling)."""
    del training
    return self.elbo(x)

  # --- generation and reconstruction -------------------------------------------------------

  def sample(self, n, temperature=1.0, use_mean_y: bool = False, seed=None):
    """Generation (Sec. 3.4, Eq. 23-27): `(n, H, W, C)` floats in [0, 256).

    `n` is a positive Python int or an int32 scalar tensor.

    z ~ N(0, I); y ~ N(mu_y, (temperature * sigma_y)^2) (or y = mu_y); x = f_z^{-1}(y), clipped to
    [0, 256) (the squash puts some mass outside, docs/design.md §1).
    """
    if not tf.is_tensor(n):
      n = validation.check_positive_int(n, "n")
    z_seed, x_seed = tfp.random.split_seed(seed)
    if not self.config.has_vae:
      return self._sample_x(None, temperature, use_mean_y, x_seed, n=n)
    return self._sample_x(self.prior.sample(n, seed=z_seed), temperature, use_mean_y, x_seed)

  def reconstruct(self, x, use_mean_y: bool = False, seed=None, temperature=1.0):
    """Reconstruction (Sec. 3.5, Eq. 28-34): z ~ q(z|x), then as `sample`. `(B, H, W, C)`."""
    self._require_vae("reconstruct")
    z_seed, x_seed = tfp.random.split_seed(seed)
    z = self.encode(x).sample(seed=z_seed)
    return self._sample_x(z, temperature, use_mean_y, x_seed)

  def sample_from_z(self, z, temperature=1.0, use_mean_y: bool = False, seed=None):
    """x = f_z^{-1}(y), y ~ N(mu_y, (temperature sigma_y)^2) (or mu_y): `(B, H, W, C)` in [0, 256).

    z `(B, latent_dim)`; None for "realnvp", which then returns a single image.
    """
    if z is not None:
      z = validation.check_latent(z, self.config.latent_dim, dtype=self.compute_dtype)
    return self._sample_x(z, temperature, use_mean_y, seed)

  def decode_images(self, z):
    """The deterministic image of z: x = f_z^{-1}(mu_y) (the mu_y path), `(B, H, W, C)`."""
    return self._sample_x(validation.check_latent(z, self.config.latent_dim,
                                                  dtype=self.compute_dtype), 1.0, True, None)

  def _sample_x(self, z, temperature, use_mean_y, seed, n=None):
    p = self.p_x_given_z(z, temperature=temperature)
    if use_mean_y:
      x = self._mean_image(p)
      if n is not None:
        x = tf.tile(x[None], [n, 1, 1, 1])
    else:
      x = p.sample(n, seed=seed) if n is not None else p.sample(seed=seed)
    return tf.clip_by_value(x, 0.0, _MAX_PIXEL)

  def _mean_image(self, p):
    if self.config.likelihood == "pixel_logistic":
      loc = p.discrete.distribution.distribution.loc
      return tf.floor(tf.clip_by_value(loc + 0.5, 0.0, 255.0)) + 0.5
    return p.bijector.forward(p.distribution.mean())

  def _require_vae(self, what: str):
    if not self.config.has_vae:
      raise ValueError(f"{what}() needs a VAE, but likelihood='realnvp' has no encoder/decoder.")


def to_uint8(images):
  """Floats in [0, 256) -> uint8 pixels (floor, clipped to 0..255)."""
  return tf.cast(tf.clip_by_value(tf.floor(images), 0.0, 255.0), tf.uint8)
