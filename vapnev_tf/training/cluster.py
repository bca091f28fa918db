"""Where a multi-worker run learns its cluster: TF_CONFIG, or Slurm's environment.

    TF_CONFIG set            TFConfigClusterResolver (Kubeflow's TFJob controller, Vertex AI and
                             hand-written launchers set it for every task)
    Slurm job step, no       SlurmClusterResolver: the hosts come from SLURM_STEP_NODELIST, this
    TF_CONFIG                task's rank from SLURM_PROCID, one worker per Slurm task
    neither                  ConfigError naming both ways

Recipes that use each path are in `docs/cluster.md` and `configs/cluster/`.
"""
import json
import os
import shutil

import tensorflow as tf
# The public resolver parses Slurm's "2(x3),1" task counts with this helper; reuse it, not a copy.
from tensorflow.python.distribute.cluster_resolver.slurm_cluster_resolver import (  # pylint: disable=g-direct-tensorflow-import
    expand_tasks_per_node)

from vapnev_tf.training.checkpointing import ConfigError

SLURM_PORT_BASE = 8888  # first port of the Slurm workers (one per task on a node, counting up)
SLURM_PORT_BASE_ENV = "VAPNEV_SLURM_PORT_BASE"  # overrides SLURM_PORT_BASE
_SLURM_VARS = ("SLURM_PROCID", "SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS",
               "SLURM_STEP_TASKS_PER_NODE")


def in_slurm_step() -> bool:
  """Whether this process is a task of a Slurm job step (`srun`)."""
  return all(os.environ.get(name) for name in _SLURM_VARS)


def _slurm_resolver():
  """SlurmClusterResolver, one worker per Slurm task.

  TF's resolver gives each task of a node a port offset and a GPU range; with no GPU it would give
  the node no task at all (it zips the tasks with the node's GPUs). On CPU-only nodes each task is
  therefore given one nominal device slot for that bookkeeping, and CUDA_VISIBLE_DEVICES is left
  alone.
  """
  resolver_cls = tf.distribute.cluster_resolver.SlurmClusterResolver
  num_tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
  port_base = int(os.environ.get(SLURM_PORT_BASE_ENV, SLURM_PORT_BASE))
  has_gpus = bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or shutil.which("nvidia-smi")
  if has_gpus:
    return resolver_cls(jobs={"worker": num_tasks}, port_base=port_base)
  tasks_per_node = expand_tasks_per_node(os.environ["SLURM_STEP_TASKS_PER_NODE"])
  return resolver_cls(jobs={"worker": num_tasks}, port_base=port_base,
                      gpus_per_node=max(tasks_per_node), gpus_per_task=1, auto_set_gpu=False)


def cluster_resolver() -> tf.distribute.cluster_resolver.ClusterResolver:
  """The resolver of this task's cluster, from TF_CONFIG or else Slurm; ConfigError if neither."""
  raw = os.environ.get("TF_CONFIG")
  if raw:
    try:
      parsed = json.loads(raw)
    except json.JSONDecodeError as e:
      raise ConfigError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}.") from e
    if not isinstance(parsed, dict) or "cluster" not in parsed or "task" not in parsed:
      raise ConfigError(f"TF_CONFIG must hold 'cluster' and 'task', got {raw!r}.")
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if in_slurm_step():
    return _slurm_resolver()
  raise ConfigError(
      "strategy='multi_worker' needs a cluster: set TF_CONFIG (the cluster spec and this task), "
      "e.g. TF_CONFIG='{\"cluster\": {\"worker\": [\"host1:port\", \"host2:port\"]}, \"task\": "
      "{\"type\": \"worker\", \"index\": 0}}', or start every worker with srun inside a Slurm job "
      "(see docs/cluster.md).")
