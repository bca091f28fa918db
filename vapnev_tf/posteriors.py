"""q(z|x): the encoder's diagonal Gaussian (Eq. 17-19), optionally followed by IAF steps.

Inverse autoregressive flow (Kingma et al. 2016): z_0 = mu_z + sigma_z * eps, then per step t

    z_t[i] = (z_{t-1}[i] - m_t[i](z_{t-1}[<i], h)) * exp(-s_t[i](z_{t-1}[<i], h))

with (m_t, s_t) a MADE network (masked dense layers) of z_{t-1} and the encoder's context vector
h(x). Every z_t[i] depends on z_{t-1}[<= i] only, so the Jacobian is triangular and

    log q(z_T | x) = log N(z_0; mu_z, sigma_z) + sum_t sum_i s_t[i].

Step t uses the variable order 1..L when t is even and L..1 when odd (the reverse permutation).
The step is TFP's `Invert(MaskedAutoregressiveFlow(shift_and_log_scale_fn))` (MAF's inverse is
IAF's one-pass forward), built per call around a Keras 3 `MadeNetwork` that owns the weights. The
last masked layer starts at zero, so each step starts at the identity.

Sampling with `experimental_sample_and_log_prob` is one pass per step; `log_prob` of an arbitrary
z inverts the IAF, L sequential passes per step (TFP's MAF forward): use the former in bounds.
"""
import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors
tfd = tfp.distributions

POSTERIORS = ("gaussian", "iaf")


def made_masks(latent_dim: int, hidden: int, reverse: bool):
  """MADE masks (Germain et al. 2015) for one hidden layer width, float32 numpy arrays:
  input->hidden `(L, hidden)`, hidden->hidden `(hidden, hidden)`, hidden->output `(hidden, L)`.

  Output i (in the order, reversed when `reverse`) sees inputs strictly before it.
  """
  order = np.arange(1, latent_dim + 1)
  if reverse:
    order = order[::-1]
  hidden_degrees = np.arange(hidden) % max(latent_dim - 1, 1) + 1
  to_hidden = (hidden_degrees[None, :] >= order[:, None]).astype(np.float32)
  hidden_to_hidden = (hidden_degrees[None, :] >= hidden_degrees[:, None]).astype(np.float32)
  to_output = (order[None, :] > hidden_degrees[:, None]).astype(np.float32)
  return to_hidden, hidden_to_hidden, to_output


class MaskedDense(keras.layers.Layer):
  """y = x @ (kernel * mask) + bias on the last axis of x `(..., in)` -> `(..., out)`."""

  def __init__(self, mask, kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    self.mask_value = np.asarray(mask, np.float32)
    self.kernel_initializer = kernel_initializer

  def build(self, input_shape):
    del input_shape
    shape = self.mask_value.shape
    self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
    self.bias = self.add_weight(name="bias", shape=shape[1:], initializer="zeros")

  def call(self, x):
    mask = tf.constant(self.mask_value, self.compute_dtype)
    return tf.einsum("...i,ij->...j", x, self.kernel * mask) + self.bias


class MadeNetwork(keras.layers.Layer):
  """(z `(..., L)`, h `(..., context)`) -> (shift, log_scale), each `(..., L)`.

  Two masked ReLU layers of `hidden` units (h enters the first through an unmasked dense layer),
  then a masked linear output initialised at zero; log_scale = b tanh(l / b), b = 3.
  `context=False` makes an unconditional MADE (no h; `call(z)`), e.g. for a flow prior.
  """

  def __init__(self, latent_dim: int, hidden: int, reverse: bool, context: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    self.latent_dim = latent_dim
    to_hidden, hidden_to_hidden, to_output = made_masks(latent_dim, hidden, reverse)
    self.masked_in = MaskedDense(to_hidden, dtype=self.dtype_policy, name="masked_in")
    self.has_context = bool(context)
    if self.has_context:
      self.context_in = keras.layers.Dense(hidden, use_bias=False, dtype=self.dtype_policy,
                                           name="context_in")
    self.masked_hidden = MaskedDense(hidden_to_hidden, dtype=self.dtype_policy,
                                     name="masked_hidden")
    self.masked_shift = MaskedDense(to_output, kernel_initializer="zeros",
                                    dtype=self.dtype_policy, name="masked_shift")
    self.masked_log_scale = MaskedDense(to_output, kernel_initializer="zeros",
                                        dtype=self.dtype_policy, name="masked_log_scale")

  def call(self, z, h=None):
    a = self.masked_in(z)
    if self.has_context:
      a = a + self.context_in(h)  # h broadcasts against z's batch
    a = tf.nn.relu(self.masked_hidden(tf.nn.relu(a)))
    return self.masked_shift(a), 3.0 * tf.tanh(self.masked_log_scale(a) / 3.0)


def committed_rate_scale(committed_rate: float, latent_dim: int) -> float:
  """sigma_delta < 1 of the delta-VAE posterior (Razavi et al., 2019) for a rate of
  `committed_rate` = delta nats per image over `latent_dim` = L dimensions.

  With q(z_i|x) = N(mu_i, sigma_delta^2) and p(z_i) = N(0, 1),
    KL_i = (mu_i^2 + sigma_delta^2 - 1 - ln sigma_delta^2) / 2 >= (sigma_delta^2 - 1 - ln
    sigma_delta^2) / 2 = delta / L,
  with equality at mu_i = 0, so KL(q || p) >= delta for every x. Solved for t = ln sigma_delta^2
  < 0 by bisection of e^t - t = 1 + 2 delta / L (decreasing in t on t < 0); returns exp(t / 2).
  """
  if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
    raise ValueError(f"latent_dim must be an int >= 1, got {latent_dim!r}.")
  if not (isinstance(committed_rate, (int, float)) and np.isfinite(committed_rate)
          and committed_rate > 0):
    raise ValueError(f"committed_rate must be > 0 and finite, got {committed_rate!r}.")
  target = 1.0 + 2.0 * float(committed_rate) / latent_dim
  lo, hi = -target - 1.0, 0.0  # e^lo - lo > target, e^0 - 0 = 1 < target
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if np.exp(mid) - mid > target:
      lo = mid
    else:
      hi = mid
  return float(np.exp(0.5 * hi))


class IAFPosterior(keras.layers.Layer):
  """`num_steps` IAF steps after the encoder's Gaussian (module docstring).

  Args:
    latent_dim: L.
    num_steps: IAF steps (>= 1).
    hidden: units of each MADE layer.
  """

  def __init__(self, latent_dim: int, num_steps: int, hidden: int, **kwargs):
    super().__init__(**kwargs)
    self.latent_dim, self.num_steps = int(latent_dim), int(num_steps)
    for t in range(self.num_steps):
      setattr(self, f"made{t}", MadeNetwork(self.latent_dim, int(hidden), reverse=t % 2 == 1,
                                            dtype=self.dtype_policy, name=f"made{t}"))

  def call(self, z, h):
    """z `(B, L)`, h `(B, context)` -> z_T `(B, L)` (builds the weights)."""
    return self.bijector(h).forward(z)

  def step(self, t: int, h):
    """IAF step t as a TFP bijector (forward: z_{t-1} -> z_t), conditioned on h."""
    made = getattr(self, f"made{t}")
    maf = tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=lambda z: made(z, h),
                                       name=f"maf{t}")
    return tfb.Invert(maf, name=f"iaf{t}")

  def bijector(self, h):
    """z_0 -> z_T: the steps in order (Chain applies right to left)."""
    return tfb.Chain([self.step(t, h) for t in reversed(range(self.num_steps))], name="iaf")

  def distribution(self, mu_z, sigma_z, h):
    """q(z|x): TransformedDistribution of N(mu_z, sigma_z) by the IAF; batch `[B]`, event `[L]`.

    Its batch must not be broadcast beyond h's: draw samples with `sample(n)`.
    """
    base = tfd.MultivariateNormalDiag(loc=mu_z, scale_diag=sigma_z, name="q_z0_given_x")
    return tfd.TransformedDistribution(base, self.bijector(h), name="q_z_given_x")
