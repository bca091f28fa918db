"""`InverseFlow`: f_z^{-1} as an instance of `tfb.Chain`, the bijector of p(x|z).

TFP's `tfb.Chain(parts)` returns its private `_Chain` class (not a `tfb.Chain` instance) whenever a
part is not a `CompositeTensor`, as this project's bijectors are not (they close over Keras layers
and are built per call). A subclass of `tfb.Chain` is always constructed as itself (TFP documents
subclassing for this), so `isinstance(p.bijector, tfb.Chain)` holds; it adds nothing else.
"""
import tensorflow_probability as tfp


class InverseFlow(tfp.bijectors.Chain):
  """`tfb.Chain(bijectors)`: forward applies `bijectors[-1]` first, as TFP's Chain does."""
