"""p(z): the standard normal or a learned flow prior (Chen et al. 2017, "Variational Lossy
Autoencoder"; masked autoregressive flow, Papamakarios et al. 2017).

The flow prior is N(0, I) transformed by `num_steps` MAF steps; step t maps u_{t-1} -> u_t with

    u_t[i] = u_{t-1}[i] * exp(s_t[i](u_t[<i])) + m_t[i](u_t[<i])

((m_t, s_t) an unconditional MADE network, `vapnev_tf.posteriors.MadeNetwork`), so the density of
any z is one pass per step (the inverse is parallel):

    log p(z) = log N(u_0; 0, I) - sum_t sum_i s_t[i],   u_T = z,

and sampling is latent_dim sequential passes per step (generation only). Step t uses the variable
order 1..L when t is even and L..1 when odd. The MADE outputs start at zero, so a fresh flow prior
is exactly N(0, I). The steps are TFP's `MaskedAutoregressiveFlow`, built per call around Keras 3
layers that own the weights.
"""
import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vapnev_tf.posteriors import MadeNetwork

tfb = tfp.bijectors
tfd = tfp.distributions

PRIORS = ("standard", "flow")


def standard_normal(latent_dim: int, dtype):
  """N(0, I), event `(latent_dim,)`."""
  zeros = tf.zeros([latent_dim], dtype)
  return tfd.MultivariateNormalDiag(loc=zeros, scale_diag=tf.ones_like(zeros), name="prior")


class FlowPrior(keras.layers.Layer):
  """A learned p(z): `num_steps` MAF steps on N(0, I) (module docstring).

  Args:
    latent_dim: L.
    num_steps: MAF steps (>= 1).
    hidden: units of each MADE layer.
  """

  def __init__(self, latent_dim: int, num_steps: int, hidden: int, **kwargs):
    super().__init__(**kwargs)
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps!r}.")
    self.latent_dim, self.num_steps = int(latent_dim), int(num_steps)
    for t in range(self.num_steps):
      setattr(self, f"made{t}", MadeNetwork(self.latent_dim, int(hidden), reverse=t % 2 == 1,
                                            context=False, dtype=self.dtype_policy,
                                            name=f"made{t}"))

  def call(self, z):
    """log p(z) `z.shape[:-1]` of z `(..., L)` (builds the weights)."""
    return self.distribution().log_prob(z)

  def bijector(self):
    """u_0 -> z: the MAF steps in order (Chain applies right to left)."""
    steps = [tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=getattr(self, f"made{t}"),
                                          name=f"maf{t}") for t in range(self.num_steps)]
    return tfb.Chain(list(reversed(steps)), name="prior_flow")

  def distribution(self):
    """p(z): batch `[]`, event `[L]`."""
    return tfd.TransformedDistribution(standard_normal(self.latent_dim, self.compute_dtype),
                                       self.bijector(), name="prior")
