"""`compute_dtype="bfloat16"` reaches only the hidden layers of the networks (docs/design.md §25).

What decides the density stays float32: each network's output layer (coupling l1/m1/l2/m2, the
decoder's mu_y/sigma_y heads, the encoder's posterior projections), Eq. 16, tanh, the log-dets,
the logit squash, softplus, the base log-prob, the KL; and the variables. Checked on the traced
ELBO: no op but the hidden layers' own touches a bfloat16 tensor, and every bfloat16 result is
cast up straight into a float32 linear layer (never into the density's arithmetic).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import model_fixtures as mf
import vapnev_tf
from vapnev_tf.layers import CouplingNetwork
from vapnev_tf.layers import ResidualNet

# The ops of a bfloat16 hidden layer (Keras' Conv2D/Conv2DTranspose/Dense with ReLU, residual
# sums, crops, the casts in and out); Tanh, Softplus, Exp, Log, Sum... must not appear.
HIDDEN_LAYER_OPS = {"Cast", "Conv2D", "Conv2DBackpropInput", "MatMul", "BiasAdd", "Relu", "AddV2",
                    "Reshape", "Squeeze", "StridedSlice"}
# Ops that move or reshape a tensor without arithmetic, followed to the op that computes with it.
SHAPE_OPS = {"Reshape", "Squeeze", "ExpandDims", "Identity", "StridedSlice", "Split", "SplitV",
             "ConcatV2", "Transpose", "BroadcastTo"}
# A float32 linear layer: what a bfloat16 network's features may be cast up into.
LINEAR_OPS = {"Conv2D", "Conv2DBackpropInput", "MatMul"}

MODELS = {
    "paper_networks": dict(),
    "shared_fused": dict(conditioning="shared", fused_networks=True),
    "vdq_iaf_glow": dict(dequantization="variational", posterior="iaf", iaf_steps=1,
                         flow_layout="squeeze (actnorm invconv channel)*2"),
}


def _elbo_graph(options):
  keras.utils.set_random_seed(0)
  model = vapnev_tf.VAPNEV(mf.tiny_config(compute_dtype="bfloat16", **options))
  x = mf.real_batch(2)
  fn = tf.function(lambda images: model.elbo(images, seed=tf.constant([1, 2])))
  return model, fn.get_concrete_function(x).graph


def _computing_consumers(tensor):
  """The types of the ops that compute with `tensor`, looking through `SHAPE_OPS`."""
  found = []
  for op in tensor.consumers():
    if op.type in SHAPE_OPS:
      for out in op.outputs:
        found.extend(_computing_consumers(out))
    else:
      found.append(op.type)
  return found


@pytest.mark.parametrize("name", list(MODELS))
def test_bfloat16_stays_inside_the_hidden_layers_of_the_networks(name):
  model, graph = _elbo_graph(MODELS[name])
  bf16_ops = [op for op in graph.get_operations()
              if tf.bfloat16 in [t.dtype for t in list(op.inputs) + list(op.outputs)]]
  assert any(op.type == "Conv2D" for op in bf16_ops)  # the option is on at all
  assert {op.type for op in bf16_ops} <= HIDDEN_LAYER_OPS, sorted(
      {op.type for op in bf16_ops} - HIDDEN_LAYER_OPS)
  cast_up = [op for op in bf16_ops if op.type == "Cast" and op.inputs[0].dtype == tf.bfloat16]
  assert cast_up
  for op in cast_up:
    consumers = _computing_consumers(op.outputs[0])
    assert consumers and set(consumers) <= LINEAR_OPS, (op.name, consumers)
  # Master weights and the optimizer's state are float32 (mixed_bfloat16's variables).
  optimizer = keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  floating = [v for v in model.weights + optimizer.variables if "float" in str(v.dtype)]
  assert floating and {str(v.dtype) for v in floating} == {"float32"}


def test_the_networks_outputs_are_computed_in_float32():
  # A float32 result of a bfloat16 computation lies on bfloat16's grid (8 significant bits);
  # outputs computed in float32 from bfloat16 features do not.
  keras.utils.set_random_seed(0)
  net = CouplingNetwork(2, 4, 4, filters=4, num_res_blocks=1, compute_dtype="bfloat16")
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(3, 4, 4, 2)), tf.float32)
  z = tf.constant(rng.normal(size=(3, 5)), tf.float32)
  net(x, z)
  for network, inputs in ((net.l1, x), (net.m1, x), (net.l2, z), (net.m2, z)):
    assert network.conv_out.compute_dtype == "float32"
    first = network.conv_in if isinstance(network, ResidualNet) else network.project
    assert first.compute_dtype == "bfloat16"
    out = network(inputs).numpy()
    assert out.dtype == np.float32
    on_grid = out == tf.cast(tf.cast(out, tf.bfloat16), tf.float32).numpy()
    assert on_grid.mean() < 0.5, network.name
