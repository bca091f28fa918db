"""Compute dtypes of the convolutional networks (docs/design.md §7, §25).

`compute_dtype="float32"` keeps every network in the model's own dtype policy (the default,
also for float64 models). `"bfloat16"` gives the hidden layers of the convolutional networks
Keras' "mixed_bfloat16" policy: variables (and so the optimizer's state) stay float32, those
convolutions compute in bfloat16. Everything that decides the density stays in the model's dtype:
each network's last, linear layer (coupling l1/m1/l2/m2 outputs, the decoder's mu_y/sigma_y heads,
the encoder's posterior projections) reads its bfloat16 features cast up (`to_model_dtype`) and
computes in float32, and so do Eq. 12-16, tanh/exp, the log-dets, the logit squash, the base
distribution, the KL and the losses. log_prob is then the exact float32 evaluation of networks
whose hidden features were rounded to bfloat16.
"""
import keras
import tensorflow as tf

COMPUTE_DTYPES = ("float32", "bfloat16")


def network_policy(compute_dtype, model_policy):
  """The Keras dtype policy of a convolutional network.

  Args:
    compute_dtype: one of `COMPUTE_DTYPES`, or None (= "float32").
    model_policy: the owning layer's `dtype_policy` (float32 or float64 variables).
  Returns:
    `model_policy` for "float32"/None; `keras.DTypePolicy("mixed_bfloat16")` for "bfloat16".
  """
  if compute_dtype is None or compute_dtype == "float32":
    return model_policy
  if compute_dtype != "bfloat16":
    raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}.")
  variable_dtype = keras.DTypePolicy(model_policy).variable_dtype if isinstance(
      model_policy, str) else model_policy.variable_dtype
  if variable_dtype != "float32":
    raise ValueError(f"compute_dtype='bfloat16' needs a float32 model (mixed_bfloat16 keeps "
                     f"float32 variables), got a model of dtype {variable_dtype!r}.")
  return keras.DTypePolicy("mixed_bfloat16")


def to_model_dtype(layer, *tensors):
  """Casts network outputs to `layer.compute_dtype` (no-op when they already have it)."""
  out = tuple(t if t.dtype == layer.compute_dtype else tf.cast(t, layer.compute_dtype)
              for t in tensors)
  return out if len(out) > 1 else out[0]
