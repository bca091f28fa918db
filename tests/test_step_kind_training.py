"""Adding a flow step kind is one place: `tests/flow_fixtures.py` defines and registers `z_affine`
(a layer owning its weights + a bijector builder); a ModelConfig layout string then names it, and
the library's own training step trains a VAPNEV whose flow uses it."""
import numpy as np
import pytest
import tensorflow as tf

import flow_fixtures as ff
from vapnev_tf.config import ModelConfig
from vapnev_tf.training import TrainConfig
from vapnev_tf.training import TrainState
from vapnev_tf.training import make_train_step

# What these tests check is arithmetic and state, not compilation: tf.functions run eagerly
# (tests/conftest.py, `eager`); the shared runs and the console processes run compiled.
pytestmark = pytest.mark.eager

LAYOUT = (
    "checkerboard z_affine squeeze channel*2 factor_out | z_affine checkerboard:1 squeeze channel")


def test_a_registered_kind_trains_through_the_library_step():
  kind = ff.register_z_affine()
  model_cfg = ModelConfig(image_shape=(8, 8, 1), latent_dim=4, encoder_filters=4, encoder_blocks=2,
                          encoder_layers_per_block=1, flow_filters=4, flow_res_blocks=0,
                          flow_layout=LAYOUT)
  train_cfg = TrainConfig(train_steps=3, learning_rate=1e-2, export_at_end=False)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  state = TrainState.create(model_cfg, train_cfg, strategy)
  flow = state.model.flow
  new_layers = [getattr(flow, name) for name in ("scale0_z_affine0", "scale1_z_affine0")]
  new_weights = [v for layer in new_layers for v in layer.trainable_variables]
  assert new_weights, "the new kind's layers own weights"
  tracked = {id(v) for v in state.model.trainable_variables}
  assert all(id(v) in tracked for v in new_weights), "Keras tracks the new kind's weights"
  before = [v.numpy().copy() for v in new_weights]

  images = np.random.default_rng(0).integers(0, 256, size=(8, 8, 8, 1)).astype(np.float32)
  batches = tf.data.Dataset.from_tensors(images + 0.5).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(batches))
  train_step = make_train_step(strategy, train_cfg, global_batch_size=8)
  losses = [float(train_step(state, iterator)["loss"]) for _ in range(3)]

  assert all(np.isfinite(losses)), losses
  assert int(state.skipped_steps.numpy()) == 0
  changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, new_weights)]
  assert all(changed), "every weight of the new kind was updated by the step"
  assert kind in flow.layout_string()


def test_a_layout_naming_an_unregistered_kind_is_refused_naming_the_field():
  with pytest.raises(ValueError, match="flow_layout.*no_such_kind"):
    ModelConfig(image_shape=(8, 8, 1), flow_layout="checkerboard no_such_kind squeeze channel")
