"""Every recipe beyond the paper (Glow-style steps, variational dequantisation, the IAF
posterior) goes the whole way a user takes it: `vapnev_tf.train` (with ActNorm's data-dependent
initialisation), `python -m vapnev_tf.export`, then `python -m vapnev_tf.sample` on the SavedModel
and the export's signatures in a TensorFlow-only process."""
import json

import numpy as np
import pytest

from run_fixtures import PYTHON
from run_fixtures import REPO_ROOT
from run_fixtures import Background
from run_fixtures import run_smoke
from vapnev_tf import flow_steps

pytestmark = pytest.mark.slow  # end to end: two trainings, two export CLIs, six more processes

GLOW = flow_steps.glow_layout_string(1, 2)  # squeeze (actnorm invconv channel)*2
SMALL = ("--train_steps=2", "--eval_every=0", "--checkpoint_every=2", "--eval_take=16",
         "--eval_batch_size=16", "--eval_num_samples=2", "--dequantization_filters=4")
RECIPES = {
    # every extension at once on the conditional model ...
    "vapnev_glow_vdq_iaf": ("--likelihood=vapnev", f"--flow_layout={GLOW}",
                            "--dequantization=variational", "--posterior=iaf"),
    # ... and the flow-only baseline with the flow extensions
    "realnvp_glow_vdq": ("--likelihood=realnvp", f"--flow_layout={GLOW}",
                         "--dequantization=variational"),
}

_SERVE_SCRIPT = r'''
import json, sys
import numpy as np
import tensorflow as tf

loaded = tf.saved_model.load(sys.argv[1])
sig = loaded.signatures
images = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8))
bound = sig["log_likelihood_bound"](images=images, num_samples=tf.constant(2),
                                    seed=tf.constant(5, tf.int64))
sample = sig["sample"](num_samples=tf.constant(2), temperature=tf.constant(0.8),
                       seed=tf.constant(5, tf.int64))["images"].numpy()
print(json.dumps({"signatures": sorted(sig), "bits_per_dim": bound["bits_per_dim"].numpy().tolist(),
                  "sample_shape": list(sample.shape), "sample_dtype": str(sample.dtype),
                  "vapnev_tf_loaded": any(m.split(".")[0] == "vapnev_tf" for m in sys.modules)}))
'''


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory):
  """{recipe: (workdir, export_dir, train result)}: each recipe trained 2 steps, then both exported
  by the CLI concurrently."""
  root = tmp_path_factory.mktemp("recipes")
  runs = {}
  for name, flags in RECIPES.items():
    workdir = root / name
    runs[name] = (workdir, root / f"{name}_export", run_smoke(workdir, *flags, *SMALL))
  exports = [Background([PYTHON, "-m", "vapnev_tf.export", f"--workdir={workdir}",
                         f"--export_dir={export_dir}"], root, f"export_{name}", cwd=str(REPO_ROOT))
             for name, (workdir, export_dir, _) in runs.items()]
  for proc in exports:
    proc.wait()
  return runs


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_trains_exports_samples_and_serves(recipe_runs, recipe, tmp_path):
  workdir, export_dir, result = recipe_runs[recipe]
  assert result["step"] == 2 and np.isfinite(result["eval"]["elbo_bpd"])
  (tmp_path / "serve.py").write_text(_SERVE_SCRIPT)
  procs = {
      "sample": Background([PYTHON, "-m", "vapnev_tf.sample", f"--saved_model={export_dir}",
                            "--num=4", "--temperature=0.8", f"--out={tmp_path}/samples.png"],
                           tmp_path, "sample", cwd=str(REPO_ROOT)),
      "panel": Background([PYTHON, "-m", "vapnev_tf.sample", f"--workdir={workdir}",
                           "--mode=panel", "--num=2", f"--out={tmp_path}/panel.png"],
                          tmp_path, "panel", cwd=str(REPO_ROOT)),
      # TensorFlow only: no PYTHONPATH, cwd outside the repository
      "serve": Background([PYTHON, str(tmp_path / "serve.py"), str(export_dir)], tmp_path,
                          "serve", cwd=str(tmp_path), with_repo=False),
  }
  outputs = {name: proc.wait()[1] for name, proc in procs.items()}
  report = json.loads(outputs["sample"].strip().splitlines()[-1])
  assert report["mode"] == "samples" and (tmp_path / "samples.png").stat().st_size > 0
  assert (tmp_path / "panel.png").stat().st_size > 0
  served = json.loads(outputs["serve"].strip().splitlines()[-1])
  assert not served["vapnev_tf_loaded"]
  assert {"sample", "log_likelihood_bound"} <= set(served["signatures"])
  assert ("encode" in served["signatures"]) == recipe.startswith("vapnev")
  assert served["sample_shape"] == [2, 28, 28, 1] and served["sample_dtype"] == "uint8"
  bpd = np.array(served["bits_per_dim"])
  assert bpd.shape == (3,) and np.all(np.isfinite(bpd)) and np.all(bpd > 0)
