"""A Glow-style layout trains through `vapnev_tf.train`: its ActNorm steps are initialised from the
first batch of a NEW run only (Glow's data-dependent init), the result is checkpointed, and a
resumed run keeps it."""
import numpy as np
import pytest

from run_fixtures import run_smoke
from vapnev_tf import flow_steps
from vapnev_tf import loading

GLOW = flow_steps.glow_layout_string(1, 2)  # squeeze (actnorm invconv channel)*2, one scale


def _actnorm_state(workdir):
  model, _ = loading.restore_model(str(workdir))
  layers = flow_steps.glow.actnorm_layers(model.flow)
  return [(bool(l.initialized.numpy()), l.bias.numpy().copy(), l.log_scale.numpy().copy())
          for l in layers]


_SMALL = ("--train_steps=2", "--eval_every=0", "--checkpoint_every=1", "--eval_take=16",
          "--eval_batch_size=16", "--eval_num_samples=1")


@pytest.mark.slow  # two training runs end to end (`make test-all`)
def test_glow_layout_initialises_actnorm_once_and_keeps_it_on_resume(tmp_path):
  workdir = tmp_path / "run"
  result = run_smoke(workdir, f"--flow_layout={GLOW}", *_SMALL)
  assert np.isfinite(result["eval"]["elbo_bpd"])
  first = _actnorm_state(workdir)
  assert len(first) == 2 and all(initialized for initialized, _, _ in first)
  # Initialised from data: the first ActNorm maps the squeezed logits to zero mean, so its bias is
  # far from its zero start (pixel logits have a clearly non-zero mean on Fashion-MNIST).
  assert np.abs(first[0][1]).max() > 0.1
  resumed = run_smoke(workdir, f"--flow_layout={GLOW}", *_SMALL[1:], "--train_steps=3")
  assert resumed["restored_from"] is not None
  after = _actnorm_state(workdir)
  # One more Adam step moves the weights only a little.
  for (_, b0, s0), (ok, b1, s1) in zip(first, after):
    assert ok
    assert np.abs(b1 - b0).max() < 0.05 and np.abs(s1 - s0).max() < 0.05
