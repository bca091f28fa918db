"""The loss a training step minimises: the negated ELBO (Eq. 1) with the KL weight of the
annealing schedule (Sec. 3.3) and, optionally, free bits (Kingma et al., 2016).

The bounds the library reports never use either: they are the plain ELBO / IW bound.
"""
import tensorflow as tf


def replica_loss(log_px, kl, kl_weight, free_nats: float, global_batch_size: int,
                 kl_per_dim=None):
  """This replica's share of the global training loss, a scalar; the replicas' shares sum to it.

  Args:
    log_px: `(B_r,)` log p(x|z) in nats of this replica's examples, z ~ q(z|x).
    kl: `(B_r,)` KL(q(z|x) || p(z)) (or its one-sample estimate), nats.
    kl_weight: scalar w in [0, 1] (KL annealing; 1 after it).
    free_nats: lambda >= 0 (a Python float); 0 = off.
    global_batch_size: B, the number of examples over all replicas.
    kl_per_dim: None (the hinge on the total KL), or `(B_r, L)` KL of each latent dimension
      (summing to `kl`) for per-dimension free bits.

  With R replicas of B_r = B / R examples each, the global loss is
    lambda = 0:  (1/B) sum_i [-log p(x_i|z_i) + w KL_i]                 (-Eq. 1, annealed)
    lambda > 0:  (1/B) sum_i -log p(x_i|z_i) + w (1/R) sum_r max(lambda, mean_{i in r} KL_i)
  The free-bits hinge is on each replica's batch mean (on one replica, the global batch mean):
  while the mean KL is below lambda the KL term has no gradient, so the encoder can put up to
  lambda nats per image into z without paying for them; above it the loss is the annealed ELBO's.
  Per-dimension free bits (`kl_per_dim` given; Kingma et al. 2016's own form) hinge each dimension:
    lambda > 0:  (1/B) sum_i -log p(x_i|z_i) + w (1/R) sum_r sum_d max(lambda / L,
                                                                      mean_{i in r} KL_{i,d})
  so no single dimension can buy the free rate for the others. With lambda = 0 `kl_per_dim` is
  unused (the plain annealed ELBO).
  """
  if free_nats < 0:
    raise ValueError(f"free_nats must be >= 0, got {free_nats!r}.")
  recon = tf.reduce_sum(-log_px) / global_batch_size
  if free_nats > 0 and kl_per_dim is not None:
    local = tf.cast(tf.shape(kl_per_dim)[0], kl.dtype)
    per_dim = tf.cast(tf.shape(kl_per_dim)[-1], kl.dtype)
    mean_kl = tf.math.divide_no_nan(tf.reduce_sum(kl_per_dim, axis=0), local)  # (L,)
    floor = tf.constant(free_nats, kl.dtype) / per_dim
    kl_term = tf.reduce_sum(tf.maximum(mean_kl, floor)) * local / global_batch_size
  elif free_nats > 0:
    local = tf.cast(tf.size(kl), kl.dtype)
    mean_kl = tf.math.divide_no_nan(tf.reduce_sum(kl), local)
    kl_term = tf.maximum(mean_kl, tf.constant(free_nats, kl.dtype)) * local / global_batch_size
  else:
    kl_term = tf.reduce_sum(kl) / global_batch_size
  weight = tf.cast(tf.convert_to_tensor(kl_weight, dtype_hint=kl.dtype), kl.dtype)
  return recon + weight * kl_term
