"""Exact pre-processing of dequantised 8-bit pixels as a bijector chain (Sec. 4.1, docs/design.md §1).

    x in [0, 256)^D  --Scale(1/256)-->  [0, 1)  --Scale(1-2a), Shift(a)-->  x' in [a, 1-a)
                     --logit-->  R^D

Each step's log-det enters log p(x) through the same machinery as the flow's:
    log|det| = -D log 256 + D log(1 - 2a) - sum(log x' + log(1 - x')).
The paper's x' = a + (1 - a) x maps 1 to 1 and its logit is unbounded (docs/design.md §1); this is the
symmetric form of the Real NVP reference code.
"""
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors

NUM_PIXEL_LEVELS = 256.0


def pixels_to_logits(alpha: float = 0.05, dtype=tf.float32, validate_args: bool = False):
  """Bijector `x -> logit(alpha + (1 - 2 alpha) x / 256)`, element-wise (min event ndims 0)."""
  if not 0.0 <= alpha < 0.5:
    raise ValueError(f"alpha (logit squash) must be in [0, 0.5), got {alpha!r}.")
  const = lambda v: tf.constant(v, dtype=dtype)
  return tfb.Chain([
      tfb.Invert(tfb.Sigmoid(validate_args=validate_args), name="logit"),
      tfb.Shift(const(alpha), validate_args=validate_args, name="squash_shift"),
      tfb.Scale(const(1.0 - 2.0 * alpha), validate_args=validate_args, name="squash_scale"),
      tfb.Scale(const(1.0 / NUM_PIXEL_LEVELS), validate_args=validate_args, name="to_unit_interval"),
  ], validate_args=validate_args, name="pixels_to_logits")
