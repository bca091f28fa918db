"""tf.distribute plumbing: strategy by name, chief detection, the resumable training stream."""
import tensorflow as tf

from vapnev_tf import data as data_lib
from vapnev_tf.errors import ConfigError
from vapnev_tf.training import cluster
from vapnev_tf.config import STRATEGIES


def make_strategy(name: str, peer_timeout_seconds: float = cluster.PEER_TIMEOUT_SECONDS
                  ) -> tf.distribute.Strategy:
  """The strategy called `name`; create it before any other TensorFlow op runs.

    mirrored      MirroredStrategy over all local devices (all GPUs, else the CPU(s): one replica
                  on a plain CPU machine, N with N logical CPU devices configured).
    multi_worker  MultiWorkerMirroredStrategy; the cluster and this task come from TF_CONFIG, or
                  from Slurm's environment inside `srun` (`vapnev_tf.training.cluster`);
                  created once every other task accepts connections, waiting at most
                  `peer_timeout_seconds` (`cluster.wait_for_cluster`: PeersUnavailableError,
                  or PeerWaitInterrupted on SIGTERM/SIGINT).
    one_device    OneDeviceStrategy on the first GPU, else the CPU.
  """
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "multi_worker":
    resolver = cluster.cluster_resolver()
    cluster.wait_for_cluster(resolver, peer_timeout_seconds)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  raise ConfigError(f"strategy must be one of {STRATEGIES}, got {name!r}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this task writes the run directory (always true outside multi-worker training)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  cluster = resolver.cluster_spec().as_dict()
  if "chief" in cluster:
    return resolver.task_type == "chief"
  return resolver.task_type == "worker" and int(resolver.task_id) == 0


def task_label(strategy: tf.distribute.Strategy) -> str:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "local"
  return f"{resolver.task_type}{resolver.task_id}"


def check_batch_sizes(data_cfg: data_lib.DataConfig, strategy: tf.distribute.Strategy) -> None:
  """ConfigError (a ValueError) unless both global batch sizes split evenly over the replicas."""
  replicas = strategy.num_replicas_in_sync
  for field in ("batch_size", "eval_batch_size"):
    value = getattr(data_cfg, field)
    if value % replicas:
      raise ConfigError(f"{field}={value} is not divisible by the {replicas} replicas of the "
                       f"{type(strategy).__name__}; choose a multiple of {replicas} (the global "
                       "batch is split evenly over replicas).")


def train_dataset_from_step(strategy: tf.distribute.Strategy, data_cfg: data_lib.DataConfig,
                            start_step: int):
  """The distributed training stream positioned after `start_step` global steps.

  `tf.distribute`'s iterators cannot be saved in a `tf.train.Checkpoint` (DistributedIterator is
  not trackable), so a resumed run rebuilds the pipeline and skips the batches already consumed
  (before their augmentation: `data.train_dataset(..., start_batch=n)`).
  `data.train_dataset` is a pure function of (seed, position) (seeded shuffle, stateless
  dequantisation/flip noise keyed by epoch and example), so the skipped stream continues exactly
  where the interrupted one stopped. Each input pipeline feeds
  `num_replicas_in_sync / num_input_pipelines` per-replica batches per global step.
  A data set that cannot feed the run raises ConfigError (a ValueError) here, before training.
  """
  check_batch_sizes(data_cfg, strategy)

  def dataset_fn(ctx: tf.distribute.InputContext):
    per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    return data_lib.train_dataset(data_cfg, ctx, start_batch=start_step * per_step)

  try:
    return strategy.distribute_datasets_from_function(dataset_fn)
  except ConfigError:
    raise
  except ValueError as e:  # the data cannot feed this run (e.g. fewer images than one batch)
    raise ConfigError(str(e)) from e
