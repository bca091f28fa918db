"""`VAPNEV`: the Keras 3 model holding encoder, decoder and flow (Sec. 3, Fig. 1).

    q(z|x)  = N(mu_z, sigma_z),  (mu_z, sigma_z) = encoder(x)                      (Eq. 17-19)
    p(z)    = N(0, I)
    p(x|z)  = TransformedDistribution(N(mu_y, sigma_y), f_z^{-1}),
              (mu_y, sigma_y) = decoder(z), f_z = ConditionalRealNVP.bijector(z)   (Eq. 10-11, 20-22)
    ELBO    = log p(x|z) - KL(q(z|x) || p(z)),  z ~ q(z|x)                          (Eq. 1)

x is always dequantised pixels in [0, 256); every pre-processing log-det is inside p(x|z), so
`bits_per_dim(elbo, image_shape)` is directly comparable with the literature. The baselines
(`config.likelihood`) differ only in their `vapnev_tf.likelihoods` object, chosen once in __init__.
"vapnev_fixed_z" keeps the decoder and the conditional flow but no encoder: both see one fixed
z_0, so p(x) is an unconditional flow with learned input-independent biases (docs/design.md §24).

Two options change the bounds (docs/internals.md, "Variational dequantisation and IAF posterior"):
  * `config.dequantization="variational"` (Flow++): x_int = floor(x), u ~ q(u|x_int)
    (`vapnev_tf.dequantization`), and every bound gains -log q(u|x_int) at x = x_int + u; q(z|x)
    then sees x_int. "uniform" is the model without it: u = x - floor(x), log q(u) = 0, x as given.
  * `config.posterior="iaf"`: q(z|x) is the Gaussian followed by IAF steps
    (`vapnev_tf.posteriors`); KL(q || p) is then the one-sample estimate log q(z|x) - log p(z).
    "gaussian" keeps the analytic KL.

Two options against posterior collapse change the model itself (docs/design.md §18); the bounds
are the true ELBO / IW bound of the model so changed:
  * `config.committed_rate` = delta > 0: q(z|x) = N(mu_z, sigma_delta^2 I) with the fixed
    sigma_delta of `posteriors.committed_rate_scale`, so KL(q || N(0, I)) >= delta.
  * `config.prior="flow"`: p(z) is a learned flow (`vapnev_tf.priors.FlowPrior`); KL is then the
    one-sample estimate log q(z|x) - log p(z), and `sample` draws z from it.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf import seeds
from vapnev_tf import validation
from vapnev_tf.config import ModelConfig
from vapnev_tf.dequantization import VariationalDequantizer
from vapnev_tf.dequantization import integer_image
from vapnev_tf.flow import ConditionalRealNVP
from vapnev_tf.likelihoods import make_likelihood
from vapnev_tf.networks import Decoder
from vapnev_tf.networks import Encoder
from vapnev_tf.posteriors import IAFPosterior
from vapnev_tf.posteriors import committed_rate_scale
from vapnev_tf.priors import FlowPrior
from vapnev_tf.priors import standard_normal

tfd = tfp.distributions

_MAX_PIXEL = 256.0 - 2.0 ** -8  # largest float32 image value we emit (< 256, exactly representable)


class VAPNEV(keras.Model):
  """VAPNEV and its baselines (selected by `config.likelihood`), one code path.

  The likelihood object (`vapnev_tf.likelihoods`, chosen once here) says whether there is a VAE and
  a flow and turns the layers' outputs into p(x|z); the layers (encoder, decoder, flow) are this
  model's attributes, so Keras owns every weight.

  Args:
    config: a `ModelConfig`.
  """

  def __init__(self, config: ModelConfig, **kwargs):
    if not isinstance(config, ModelConfig):
      raise ValueError(f"config must be a vapnev_tf.ModelConfig, got {type(config).__name__}.")
    super().__init__(dtype=config.dtype, **kwargs)
    self.config = config
    self._likelihood = make_likelihood(config.likelihood, config.image_shape, self.compute_dtype)
    if self._likelihood.needs_vae:
      iaf = config.posterior == "iaf"
      fixed_scale = (committed_rate_scale(config.committed_rate, config.latent_dim)
                     if config.committed_rate > 0 else None)
      self.encoder = Encoder(config.latent_dim, config.encoder_filters, config.encoder_blocks,
                             config.encoder_layers_per_block, config.min_scale,
                             context_dim=config.latent_dim if iaf else 0,
                             compute_dtype=config.compute_dtype, fixed_scale=fixed_scale,
                             dtype=config.dtype, name="encoder")
      if config.prior == "flow":
        self.prior_flow = FlowPrior(config.latent_dim, config.prior_steps, 2 * config.latent_dim,
                                    dtype=config.dtype, name="prior")
      if iaf:
        self.iaf = IAFPosterior(config.latent_dim, config.iaf_steps,
                                config.iaf_hidden or 2 * config.latent_dim, dtype=config.dtype,
                                name="iaf")
    if self._likelihood.needs_vae or self._likelihood.fixed_latent:
      self.decoder = Decoder(config.image_shape, config.decoder_filters or config.encoder_filters,
                             config.encoder_blocks,
                             config.encoder_layers_per_block, num_heads=2, dtype=config.dtype,
                             compute_dtype=config.compute_dtype, name="decoder")
    if self._likelihood.uses_flow:
      self.flow = ConditionalRealNVP(
          config.image_shape, latent_dim=config.latent_dim, num_scales=config.flow_scales,
          num_checkerboard=config.flow_checkerboard, num_channelwise=config.flow_channelwise,
          filters=config.flow_filters, num_res_blocks=config.flow_res_blocks,
          conditional=self._likelihood.conditional_flow, log_scale_bound=config.log_scale_bound,
          logit_alpha=config.logit_alpha, layout=config.flow_layout.strip() or None,
          conditioning=config.conditioning, fused_networks=config.fused_networks,
          compute_dtype=config.compute_dtype, receptive_field=config.flow_receptive_field,
          dtype=config.dtype, name="flow")
    if self.variational_dequantization:
      self.dequantizer = VariationalDequantizer(
          config.image_shape, filters=config.dequantization_filters,
          log_scale_bound=config.log_scale_bound, dtype=config.dtype, name="dequantizer")
    self._build_weights()

  def _build_weights(self):
    x = tf.fill((1,) + self.config.image_shape, tf.constant(128.0, self.compute_dtype))
    self.elbo(x, seed=(0, 0))
    self.built = True

  @property
  def likelihood(self):
    """The `vapnev_tf.likelihoods.Likelihood` of `config.likelihood` (stateless, no weights)."""
    return self._likelihood

  @property
  def has_vae(self) -> bool:
    return self._likelihood.needs_vae

  @property
  def variational_dequantization(self) -> bool:
    """Whether the bounds draw u ~ q(u|x_int) (`config.dequantization == "variational"`)."""
    return self.config.dequantization == "variational"

  @property
  def iaf_posterior(self) -> bool:
    return self.has_vae and self.config.posterior == "iaf"

  def parameter_groups(self) -> dict:
    """`trainable_variables` partitioned by part of the model, e.g. {"encoder": [...], "iaf",
    "prior", "decoder", "flow/z_trunk", "flow/checkerboard", "flow/channel", "dequantizer"} (the flow by
    step kind): for per-part gradient norms and per-part optimiser settings. Every trainable
    variable is in exactly one group; one owned by none of these parts goes to "other"."""
    parts = [("encoder", "encoder"), ("iaf", "iaf"), ("decoder", "decoder"),
             ("dequantizer", "dequantizer"), ("prior", "prior_flow")]
    groups = {}
    for name, attribute in parts:
      layer = getattr(self, attribute, None)
      if layer is not None and layer.trainable_variables:
        groups[name] = list(layer.trainable_variables)
    if self._likelihood.uses_flow:
      groups.update({f"flow/{kind}": v for kind, v in self.flow.parameter_groups().items()})
    grouped = {id(v) for variables in groups.values() for v in variables}
    other = [v for v in self.trainable_variables if id(v) not in grouped]
    if other:
      groups["other"] = other
    return groups

  # --- distributions -------------------------------------------------------------------------

  @property
  def prior(self):
    """p(z), event `(latent_dim,)`: N(0, I), or the learned flow prior (`config.prior="flow"`)."""
    if self.learned_prior:
      return self.prior_flow.distribution()
    return standard_normal(self.config.latent_dim, self.compute_dtype)

  @property
  def learned_prior(self) -> bool:
    """Whether p(z) is the learned flow prior (then KL(q || p) has no closed form)."""
    return self.has_vae and self.config.prior == "flow"

  def encode(self, x):
    """q(z|x) (Eq. 17-19): batch `[B]`, event `[latent_dim]`; x `(B, H, W, C)` in [0, 256).

    posterior="gaussian": `MultivariateNormalDiag(mu_z, sigma_z)`. "iaf": a
    `TransformedDistribution` of it by the IAF steps (`vapnev_tf.posteriors`; its `log_prob` of an
    arbitrary z is latent_dim sequential passes per step, `experimental_sample_and_log_prob` one).
    With variational dequantisation q sees the integer image floor(x), i.e. it is q(z|x_int).
    """
    self._require_vae("encode")
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    return self._posterior(self._encoder_input(x))

  def encode_moments(self, x):
    """(mu_z, sigma_z) `(B, latent_dim)` each: the encoder's diagonal Gaussian (Eq. 17-19), i.e.
    q(z|x) itself for posterior="gaussian" and its base before the IAF steps for "iaf"."""
    self._require_vae("encode_moments")
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    return tuple(self.encoder(self._encoder_input(x))[:2])

  def encode_center(self, x):
    """A central point of q(z|x), `(B, latent_dim)`: mu_z for posterior="gaussian" (its mean), and
    mu_z carried through the IAF steps for "iaf" (whose mean has no closed form)."""
    self._require_vae("encode_center")
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    outputs = self.encoder(self._encoder_input(x))
    if self.iaf_posterior:
      mu_z, _, h = outputs
      return self.iaf.bijector(h).forward(mu_z)
    return outputs[0]

  def _encoder_input(self, x):
    return integer_image(x) if self.variational_dequantization else x

  def _posterior(self, x):
    """q(z|x) of checked encoder input x `(B, H, W, C)`."""
    outputs = self.encoder(x)
    if self.iaf_posterior:
      return self.iaf.distribution(*outputs)
    mu_z, sigma_z = outputs
    return tfd.MultivariateNormalDiag(loc=mu_z, scale_diag=sigma_z, name="q_z_given_x")

  def _sample_z(self, q, n, seed):
    """z ~ q(z|x) `(n, B, latent)` (n None: `(B, latent)`) and log q(z|x), or None for the
    Gaussian (whose bounds use q.log_prob and the analytic KL)."""
    if not self.iaf_posterior:
      return (q.sample(seed=seed) if n is None else q.sample(n, seed=seed)), None
    if n is None:
      return q.experimental_sample_and_log_prob(seed=seed)
    return q.experimental_sample_and_log_prob(n, seed=seed)

  def dequantize(self, x, n=None, seed=None):
    """(x_int + u, log q(u|x_int)) for x `(B, H, W, C)` in [0, 256), x_int = floor(x).

    Variational: u ~ q(u|x_int) on [2^-10, 1 - 2^-10]^D, shapes `(B, H, W, C)`, `(B,)` (or with a
    leading n). Uniform: (x, zeros) (u = x - floor(x), the data's own noise; n must be None).
    """
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    if not self.variational_dequantization:
      if n is not None:
        raise ValueError(f"n must be None with dequantization='uniform', got {n!r}.")
      return x, tf.zeros(tf.shape(x)[:1], x.dtype)
    return self._dequantize(x, n, seed)

  def _dequantize(self, x, n, seed):
    x_int = integer_image(x)
    u, log_q_u = self.dequantizer.sample_and_log_prob(x_int, n=n, seed=seed)
    return x_int + u, log_q_u

  def decode(self, z):
    """The likelihood's parameters from the decoder's two heads at z `(B, latent_dim)`, each
    `(B, H, W, C)` (Eq. 20-21; `Likelihood.parameters`).

    Flow likelihoods: (mu_y, sigma_y) of y's Gaussian. pixel_gaussian: (mean, scale) of pixels/256.
    pixel_logistic: (loc, scale) in pixel units.
    """
    self._require_vae("decode")
    return self._decode(validation.check_latent(z, self.config.latent_dim,
                                                dtype=self.compute_dtype))

  def _decode(self, z):
    """The likelihood's parameters at z `(*batch, latent_dim)`, each `(*batch, H, W, C)`: the
    convolutional decoder sees the batch flattened to one dimension."""
    if z.shape.rank == 2:
      head_mean, head_scale = self.decoder(z)
      return self._likelihood.parameters(head_mean, head_scale, self.config.min_scale)
    flat = tf.reshape(z, [-1, self.config.latent_dim])
    head_mean, head_scale = self.decoder(flat)
    params = self._likelihood.parameters(head_mean, head_scale, self.config.min_scale)
    shape = tf.concat([tf.shape(z)[:-1], tf.constant(self.config.image_shape, tf.int32)], axis=0)
    static = z.shape[:-1].concatenate(self.config.image_shape)
    params = tuple(tf.reshape(p, shape) for p in params)
    for p in params:
      p.set_shape(static)
    return params

  def fixed_z(self):
    """z_0 = (1, ..., 1) `(latent_dim,)` (batch `[]`), the z of a `fixed_latent` likelihood.

    Not 0: the decoder's and the conditioning networks' first layers are ReLU(W z + b) with b
    initialised to 0, so at z = 0 every unit is at ReLU's kink with zero gradient and the stacks
    stay at 0 forever. ||z_0||^2 = latent_dim = E||z||^2 under p(z), the input scale those layers
    are initialised for; any constant gives the same function class (W z_0 + b is a bias).
    """
    return tf.ones((self.config.latent_dim,), self.compute_dtype)

  def _latent_without_vae(self):
    """What the decoder and the flow see in a model without a VAE: `fixed_z()` for a
    `fixed_latent` likelihood, None (no z at all) otherwise."""
    return self.fixed_z() if self._likelihood.fixed_latent else None

  def flow_latent(self, x):
    """The z that conditions f_z for images x `(B, H, W, C)` of a conditional flow: the posterior
    centre `encode_center(x)` with a VAE, `fixed_z()` `(latent_dim,)` without one."""
    if self.has_vae:
      return self.encode_center(x)
    return self.fixed_z()

  def _flow_bijector(self, z):
    """f_z^{-1} (y -> x, `ConditionalRealNVP.to_pixels`); None without a flow; the unconditional
    flow ignores z."""
    if not self._likelihood.uses_flow:
      return None
    return self.flow.to_pixels(z if self._likelihood.conditional_flow else None)

  def p_x_given_z(self, z, temperature=1.0, validate_args: bool = True):
    """p(x|z): batch `z.shape[:-1]`, event `image_shape`, over dequantised pixels (Eq. 10-11,
    20-22).

    For the flows (vapnev, vae_flow, realnvp, any `flow_layout`) it is a
    `tfd.TransformedDistribution` (a `PixelTransformedDistribution`): `p.distribution` is the base
    `Independent(Normal(mu_y(z), T sigma_y(z)), 3)` over y, batch `z.shape[:-1]`, and
    `p.bijector` is f_z^{-1} as a `tfb.Chain` (`ConditionalRealNVP.to_pixels`): `forward` maps y to
    x, `p.bijector.inverse(x)` gives y = f_z(x) and
    `p.bijector.inverse_log_det_jacobian(x, event_ndims=3)` the flow's log-det, pre-processing
    included. pixel_gaussian: the same class with `tfb.Scale(256)`; pixel_logistic: a
    `UniformDequantized` discretised logistic.

    z is `(B, latent_dim)` or `(*batch, latent_dim)`; `log_prob(x)` (and the bijector) broadcast x
    `(*sample, H, W, C)` against that batch: z `(k, B, L)` with x `(B, H, W, C)` gives `(k, B)`,
    z `(3, L)` with x `(1, H, W, C)` gives `(3,)`. Without a VAE (`likelihood="realnvp"`) there is
    no z: pass None and get the flow's p(x) (batch `[]`); for "vapnev_fixed_z" that is the
    decoder's base and the conditional flow at z = `fixed_z()`. `temperature` (finite, >= 0)
    scales the base scale (sigma_y or the standard normal); 1 is the model itself.

    x checks in `log_prob` (TFP's `validate_args` convention): dtype and trailing shape always (a
    float tensor of another dtype or integer pixels raise ValueError naming the dtype and
    `vapnev_tf.data.dequantize`); values in [0, 256), NaN refused, when `validate_args` (the
    default here; a ValueError eagerly, an assertion op in a graph). The model's own bounds check x
    once on entry and then pass `validate_args=False`. z: NaN/inf refused when `validate_args`.
    """
    temperature = validation.check_temperature(temperature)
    if self._likelihood.needs_vae:
      if z is None:
        raise ValueError(f"z is required: likelihood={self.config.likelihood!r} is a VAE; pass z "
                         f"of shape (batch, {self.config.latent_dim}).")
      z = validation.check_latent(z, self.config.latent_dim, dtype=self.compute_dtype,
                                  batch_ranks=True, check_values=validate_args)
    else:
      z = self._latent_without_vae()
    params = self._decode(z) if z is not None else None
    return self._likelihood.distribution(params, self._flow_bijector(z), temperature,
                                         validate_args=validate_args)

  # --- bounds ----------------------------------------------------------------------------------

  def elbo_terms(self, x, seed=None, per_dim_kl: bool = False):
    """One-sample ELBO pieces for x `(B, H, W, C)`: dict of `(B,)` tensors.

    `log_px_given_z` = log p(x|z) at z ~ q(z|x) (reparametrised), `kl` = KL(q(z|x) || p(z))
    analytically (posterior="gaussian", prior="standard") or its one-sample estimate
    log q(z|x) - log p(z) at that z ("iaf" or prior="flow"). For "realnvp", log_px_given_z is the
    exact log p(x) and kl is 0.

    `per_dim_kl`: the dict also has `kl_per_dim` `(B, latent_dim)`, the analytic KL of each
    dimension, (mu^2 + sigma^2 - 1) / 2 - ln sigma (it sums to `kl`); only for the diagonal
    Gaussian posterior and the standard prior (ValueError otherwise).

    Variational dequantisation: log_px_given_z = log p(x_int + u | z) - log q(u|x_int) with
    u ~ q(u|x_int), a one-sample bound on log P(x_int | z), and the dict also has `log_q_u`;
    `seed` is split into (u seed, z seed). Uniform: `seed` is used as is.
    """
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    log_q_u = None
    if self.variational_dequantization:
      u_seed, seed = tfp.random.split_seed(seed)
      x_enc = integer_image(x)
      x, log_q_u = self._dequantize(x, None, u_seed)
    else:
      x_enc = x
    if per_dim_kl and (not self.has_vae or self.iaf_posterior or self.learned_prior):
      raise ValueError(f"per_dim_kl=True needs posterior='gaussian' and prior='standard' (a "
                       f"factorised analytic KL), got likelihood={self.config.likelihood!r}, "
                       f"posterior={self.config.posterior!r}, prior={self.config.prior!r}.")
    extra = {}
    if not self.has_vae:
      log_px = self.p_x_given_z(None, validate_args=False).log_prob(x)
      kl = tf.zeros_like(log_px)
    else:
      q = self._posterior(x_enc)
      z, log_q_z = self._sample_z(q, None, seed)
      log_px = self.p_x_given_z(z, validate_args=False).log_prob(x)
      if log_q_z is None and not self.learned_prior:
        kl = tfd.kl_divergence(q, self.prior)
      else:
        kl = (q.log_prob(z) if log_q_z is None else log_q_z) - self.prior.log_prob(z)
      if per_dim_kl:
        mu, sigma = q.mean(), q.stddev()
        extra["kl_per_dim"] = 0.5 * (tf.square(mu) + tf.square(sigma) - 1.0) - tf.math.log(sigma)
    if log_q_u is None:
      return {"log_px_given_z": log_px, "kl": kl, **extra}
    return {"log_px_given_z": log_px - log_q_u, "kl": kl, "log_q_u": log_q_u, **extra}

  def elbo(self, x, kl_weight=1.0, seed=None):
    """Per-example ELBO in nats, `(B,)` (Eq. 1); `kl_weight` < 1 only for KL annealing."""
    terms = self.elbo_terms(x, seed=seed)
    return terms["log_px_given_z"] - kl_weight * terms["kl"]

  def log_likelihood_bound(self, x, num_samples=1, seed=None,
                           chunk_size: int = seeds.IW_CHUNK_SIZE):
    """Importance-weighted bound (Burda et al.) on log p(x), `(B,)` nats; k = 1 is the ELBO.

        log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)

    Variational dequantisation: k joint samples (u_i, z_i) ~ q(u|x_int) q(z|x_int), a bound on
    log P(x_int):  log (1/k) sum_i p(x_int + u_i | z_i) p(z_i) / (q(z_i|x_int) q(u_i|x_int)).
    Each chunk's seed is then split into (u seed, z seed); "realnvp" averages over u only.

    Evaluated `chunk_size` samples at a time (a `tf.while_loop`, so `num_samples` may be a Python
    int or an int32 scalar tensor, e.g. in an exported signature): chunk j draws
    min(chunk_size, k - j chunk_size) samples with the j-th of `split_seed(seed, n=num_chunks)`
    (`seed` itself when there is one chunk). For "realnvp" (uniform) it is the exact log p(x).
    """
    num_samples = validation.check_count(num_samples, "num_samples")
    chunk_size = validation.check_positive_int(chunk_size, "chunk_size")
    x = validation.check_images(x, self.config.image_shape, dtype=self.compute_dtype)
    variational = self.variational_dequantization
    if not self.has_vae and not variational:
      return self.p_x_given_z(None, validate_args=False).log_prob(x)
    q = self._posterior(self._encoder_input(x)) if self.has_vae else None
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    num_chunks = num_samples // chunk_size + tf.cast(num_samples % chunk_size > 0, tf.int32)
    chunk_seeds = tf.cond(num_chunks > 1,
                          lambda: tfp.random.split_seed(seed, n=num_chunks),
                          lambda: tf.expand_dims(tfp.random.sanitize_seed(seed), 0))  # (chunks, 2)

    def chunk(j, log_weights):
      n = tf.minimum(chunk_size, num_samples - j * chunk_size)
      z_seed, x_j, log_q_u = chunk_seeds[j], x, None
      if variational:
        u_seed, z_seed = tfp.random.split_seed(z_seed)
        x_j, log_q_u = self._dequantize(x, n, u_seed)  # (n, B, H, W, C), (n, B)
      if q is None:  # realnvp
        log_w = self.p_x_given_z(None, validate_args=False).log_prob(x_j)
      else:
        z, log_q_z = self._sample_z(q, n, z_seed)  # (n, B, latent)
        log_w = self._log_importance_weights(x_j, q, z, log_q_z)
      if log_q_u is not None:
        log_w = log_w - log_q_u
      return j + 1, log_weights.write(j, log_w)

    log_weights = tf.TensorArray(self.compute_dtype, size=num_chunks, infer_shape=False,
                                 element_shape=tf.TensorShape([None, None]))
    _, log_weights = tf.while_loop(lambda j, _: j < num_chunks, chunk,
                                   [tf.constant(0), log_weights])
    log_k = tf.math.log(tf.cast(num_samples, self.compute_dtype))
    return tf.reduce_logsumexp(log_weights.concat(), axis=0) - log_k  # over the k samples

  def _log_importance_weights(self, x, q, z, log_q_z=None):
    """log p(x|z) + log p(z) - log q(z|x) for z `(n, B, latent)`; returns `(n, B)`.

    x `(B, H, W, C)` or `(n, B, H, W, C)`; `log_q_z` (from sampling) or None: q.log_prob(z).
    """
    log_px = self.p_x_given_z(z, validate_args=False).log_prob(x)  # broadcasts x to (n, B)
    return log_px + self.prior.log_prob(z) - (q.log_prob(z) if log_q_z is None else log_q_z)

  def call(self, x, training=False):
    """Per-example ELBO `(B,)` in nats (so `model(x)` is meaningful for Keras tooling)."""
    del training
    return self.elbo(x)

  # --- generation and reconstruction -------------------------------------------------------

  def sample(self, n, temperature=1.0, use_mean_y: bool = False, seed=None):
    """Generation (Sec. 3.4, Eq. 23-27): `(n, H, W, C)` floats in [0, 256).

    `n` is a positive Python int or an integer scalar tensor, at most `max_samples` (n samples
    of z and of x must fit int32 shape arithmetic); `temperature` a finite number >= 0 (a Python
    number is checked now, ValueError; a tensor by an assertion op in a graph).

    z ~ p(z) (N(0, I), or the learned flow prior); y ~ N(mu_y, (temperature * sigma_y)^2) (or y = mu_y); x = f_z^{-1}(y), clipped to
    [0, 256) (the squash puts some mass outside, docs/design.md §1).
    """
    n = self._check_num_samples(n, "n")
    temperature = validation.check_temperature(temperature)
    z_seed, x_seed = tfp.random.split_seed(seed)
    if not self.has_vae:
      return self._sample_x(None, temperature, use_mean_y, x_seed, n=n)
    return self._sample_x(self.prior.sample(n, seed=z_seed), temperature, use_mean_y, x_seed)

  @property
  def max_samples(self) -> int:
    """The largest `n` of `sample`: n * max(H * W * C, latent_dim) fits int32."""
    return validation.max_count(max(self.config.num_dims, self.config.latent_dim))

  def _check_num_samples(self, n, name: str):
    per = max(self.config.num_dims, self.config.latent_dim)
    return validation.check_count(n, name, self.max_samples,
                                  f" ({name} * {per} values must fit int32)")

  def reconstruct(self, x, use_mean_y: bool = False, seed=None, temperature=1.0):
    """Reconstruction (Sec. 3.5, Eq. 28-34): z ~ q(z|x), then as `sample`. `(B, H, W, C)`."""
    self._require_vae("reconstruct")
    temperature = validation.check_temperature(temperature)
    z_seed, x_seed = tfp.random.split_seed(seed)
    z = self._sample_z(self.encode(x), None, z_seed)[0]
    return self._sample_x(z, temperature, use_mean_y, x_seed)

  def sample_from_z(self, z, temperature=1.0, use_mean_y: bool = False, seed=None):
    """x = f_z^{-1}(y), y ~ N(mu_y, (temperature sigma_y)^2) (or mu_y): `(B, H, W, C)` in [0, 256).

    z `(B, latent_dim)`; None for "realnvp", which then returns a single image.
    """
    if z is not None:
      z = validation.check_latent(z, self.config.latent_dim, dtype=self.compute_dtype)
    return self._sample_x(z, validation.check_temperature(temperature), use_mean_y, seed)

  def decode_images(self, z):
    """The deterministic image of z: x = f_z^{-1}(mu_y) (the mu_y path), `(B, H, W, C)`."""
    return self._sample_x(validation.check_latent(z, self.config.latent_dim,
                                                  dtype=self.compute_dtype), 1.0, True, None)

  def _sample_x(self, z, temperature, use_mean_y, seed, n=None):
    """Samples of p(x|z) (n of them without a VAE), or its mean image; clipped to [0, 256)."""
    if use_mean_y:
      z = z if self.has_vae else self._latent_without_vae()
      params = self._decode(z) if z is not None else None
      x = self._likelihood.mean_image(params, self._flow_bijector(z))
      if n is not None:
        x = tf.tile(x[None], [n, 1, 1, 1])
    else:
      p = self.p_x_given_z(z, temperature=temperature, validate_args=False)
      x = p.sample(n, seed=seed) if n is not None else p.sample(seed=seed)
    return tf.clip_by_value(x, 0.0, _MAX_PIXEL)

  def _require_vae(self, what: str):
    if not self.has_vae:
      raise ValueError(f"{what}() needs a VAE, but likelihood={self.config.likelihood!r} has no "
                       "encoder/decoder.")


def to_uint8(images):
  """Floats in [0, 256) -> uint8 pixels (floor, clipped to 0..255), same shape.

  Non-finite input is refused (a NaN would otherwise become a black pixel): ValueError eagerly, an
  assertion op (tf.errors.InvalidArgumentError) in a graph. Integer input is refused too.
  """
  images = tf.convert_to_tensor(images)
  if not images.dtype.is_floating:
    raise ValueError(f"images must be float pixels in [0, 256), got dtype {images.dtype.name}.")
  message = ("to_uint8: images must be finite; NaN/inf usually come from a non-finite temperature "
             "or a diverged model")
  if tf.executing_eagerly():
    bad = int(tf.reduce_sum(tf.cast(~tf.math.is_finite(images), tf.int32)))
    if bad:
      raise ValueError(f"{message} (got {bad} non-finite values of {int(tf.size(images))}).")
  else:
    with tf.control_dependencies([tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(images)), [message])]):
      images = tf.identity(images)
  return tf.cast(tf.clip_by_value(tf.floor(images), 0.0, 255.0), tf.uint8)
