"""The cluster recipes of docs/cluster.md: they parse, run the documented command, and the cluster
each one produces resolves to the right tasks and builds a MultiWorkerMirroredStrategy."""
import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import textwrap
import types

import pytest
import yaml

from run_fixtures import TRAIN_TIMEOUT
from vapnev_tf import train
from vapnev_tf.training import cluster
from vapnev_tf.training import distribute
from vapnev_tf.training.checkpointing import ConfigError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = REPO_ROOT / "configs" / "cluster"
COMMAND = ["python", "-m", "vapnev_tf.train"]
REQUIRED_ARGS = {"--strategy=multi_worker", "--flagfile=configs/celeba.flags"}


def _tfjob():
  return yaml.safe_load((RECIPES / "tfjob.yaml").read_text())


def _vertex():
  return yaml.safe_load((RECIPES / "vertex_custom_job.yaml").read_text())


def _slurm_command():
  text = (RECIPES / "slurm.sbatch").read_text().replace("\\\n", " ")
  line = next(l for l in text.splitlines() if l.strip().startswith("srun "))
  words = shlex.split(line)[1:]
  words[0] = "python" if words[0].endswith("python") else words[0]
  return words


def _check_flags(args):
  assert REQUIRED_ARGS <= set(args), args
  workdir = [a for a in args if a.startswith("--workdir=")]
  assert len(workdir) == 1
  # Every argument is a flag of vapnev_tf.train with a valid value (placeholders expanded).
  expanded = [os.path.expandvars(a.replace("${WORKDIR}", "/tmp/w").replace("${DATA_DIR}", "/d"))
              for a in args]
  cwd = os.getcwd()
  os.chdir(REPO_ROOT)
  try:
    fv = train.parse_flags(["vapnev_tf.train", *expanded])
  finally:
    os.chdir(cwd)
  assert fv.strategy == "multi_worker" and fv.dataset == "celeb_a"


def test_tfjob_manifest_runs_the_documented_command():
  job = _tfjob()
  assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
  worker = job["spec"]["tfReplicaSpecs"]["Worker"]
  container = worker["template"]["spec"]["containers"][0]
  assert container["name"] == "tensorflow"  # the operator's TF_CONFIG goes to this container
  assert container["command"] == COMMAND
  _check_flags(container["args"])


def test_vertex_custom_job_runs_the_documented_command_in_every_pool():
  spec = _vertex()
  pools = spec["workerPoolSpecs"]
  assert len(pools) == 2 and pools[0]["replicaCount"] == 1
  for pool in pools:
    container = pool["containerSpec"]
    assert container["command"] == COMMAND
    _check_flags(container["args"])


def test_slurm_script_runs_the_documented_command():
  words = _slurm_command()
  assert words[:3] == COMMAND
  _check_flags(words[3:])
  text = (RECIPES / "slurm.sbatch").read_text()
  assert "unset TF_CONFIG" in text and "#SBATCH --nodes=2" in text


def _tfjob_tf_configs(replicas, name="vapnev-celeba", namespace="default"):
  """TF_CONFIG as the Kubeflow training operator writes it for each Worker pod."""
  hosts = [f"{name}-worker-{i}.{namespace}.svc:2222" for i in range(replicas)]
  return [{"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
          for i in range(replicas)]


def _vertex_tf_configs(workers):
  """TF_CONFIG as Vertex AI writes it: pool 0 is the chief, pool 1 the workers."""
  cluster_spec = {"chief": ["workerpool0-0:2222"],
                  "worker": [f"workerpool1-{i}:2222" for i in range(workers)]}
  tasks = [{"type": "chief", "index": 0}] + [{"type": "worker", "index": i}
                                             for i in range(workers)]
  return [{"cluster": cluster_spec, "task": t, "environment": "cloud", "job": {}} for t in tasks]


def _slurm_envs(nodes, tasks_per_node):
  n = nodes * tasks_per_node
  nodelist = f"node[1-{nodes}]" if nodes > 1 else "node1"
  return [{"SLURM_PROCID": str(r), "SLURM_STEP_NODELIST": nodelist, "SLURM_STEP_NUM_TASKS": str(n),
           "SLURM_STEP_TASKS_PER_NODE": f"{tasks_per_node}(x{nodes})"} for r in range(n)]


def _resolve(monkeypatch, env):
  for name in ("TF_CONFIG", "SLURM_PROCID", "SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS",
               "SLURM_STEP_TASKS_PER_NODE", "CUDA_VISIBLE_DEVICES"):
    monkeypatch.delenv(name, raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  resolver = cluster.cluster_resolver()
  spec = resolver.cluster_spec().as_dict()
  fake_strategy = types.SimpleNamespace(cluster_resolver=resolver)
  return spec, (resolver.task_type, int(resolver.task_id)), distribute.is_chief(fake_strategy)


@pytest.mark.parametrize("recipe", ["tfjob", "vertex", "slurm"])
def test_each_recipe_resolves_every_task_and_exactly_one_chief(monkeypatch, recipe):
  if recipe == "tfjob":
    replicas = _tfjob()["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    envs = [{"TF_CONFIG": json.dumps(c)} for c in _tfjob_tf_configs(replicas)]
  elif recipe == "vertex":
    envs = [{"TF_CONFIG": json.dumps(c)}
            for c in _vertex_tf_configs(_vertex()["workerPoolSpecs"][1]["replicaCount"])]
  else:
    envs = _slurm_envs(nodes=2, tasks_per_node=1)
  results = [_resolve(monkeypatch, env) for env in envs]
  specs = {json.dumps(spec, sort_keys=True) for spec, _, _ in results}
  assert len(specs) == 1, "every task must see the same cluster"
  tasks = [task for _, task, _ in results]
  assert len(set(tasks)) == len(envs), "every task is a different member of the cluster"
  assert sum(chief for _, _, chief in results) == 1


def test_slurm_gives_each_task_of_a_node_its_own_port(monkeypatch):
  results = [_resolve(monkeypatch, env) for env in _slurm_envs(nodes=2, tasks_per_node=2)]
  spec = results[0][0]
  assert spec == {"worker": ["node1:8888", "node1:8889", "node2:8888", "node2:8889"]}
  assert [task for _, task, _ in results] == [("worker", i) for i in range(4)]


def test_no_cluster_at_all_is_a_clear_error(monkeypatch):
  for name in ("TF_CONFIG", "SLURM_PROCID", "SLURM_STEP_NODELIST"):
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(ConfigError, match="TF_CONFIG.*srun"):
    cluster.cluster_resolver()
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(ConfigError, match="not valid JSON"):
    cluster.cluster_resolver()


_BUILD = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from vapnev_tf.training import distribute
    strategy = distribute.make_strategy("multi_worker")
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)),
                            axis=None)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "sum": float(total),
                      "chief": distribute.is_chief(strategy)}))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_workers(envs):
  base = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
  for name in ("TF_CONFIG", "SLURM_PROCID", "SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS",
               "SLURM_STEP_TASKS_PER_NODE"):
    base.pop(name, None)
  procs = [subprocess.Popen([sys.executable, "-c", _BUILD], env=dict(base, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for env in envs]
  outs = []
  for proc in procs:
    try:
      out, err = proc.communicate(timeout=TRAIN_TIMEOUT)
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail(f"a worker did not finish in {TRAIN_TIMEOUT} s (a hang guard)")
    assert proc.returncode == 0, err[-2000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  return outs


@pytest.mark.slow  # two worker processes
def test_the_strategy_builds_from_the_tfjob_tf_config_on_local_processes():
  configs = _tfjob_tf_configs(2)
  ports = [_free_port() for _ in configs]
  for c in configs:  # the pods' service names become this machine's ports
    c["cluster"]["worker"] = [f"localhost:{p}" for p in ports]
  outs = _run_workers([{"TF_CONFIG": json.dumps(c)} for c in configs])
  assert [o["replicas"] for o in outs] == [2, 2] and [o["sum"] for o in outs] == [2.0, 2.0]
  assert [o["chief"] for o in outs] == [True, False]


@pytest.mark.slow  # two worker processes
def test_the_strategy_builds_from_slurm_variables_on_local_processes():
  envs = [dict(env, SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="2",
               VAPNEV_SLURM_PORT_BASE=str(_free_port()))
          for env in _slurm_envs(nodes=1, tasks_per_node=2)]
  envs[1]["VAPNEV_SLURM_PORT_BASE"] = envs[0]["VAPNEV_SLURM_PORT_BASE"]
  outs = _run_workers(envs)
  assert [o["replicas"] for o in outs] == [2, 2] and [o["sum"] for o in outs] == [2.0, 2.0]
  assert [o["chief"] for o in outs] == [True, False]


# --- waiting for the cluster's peers -------------------------------------------------------------


def _two_worker_resolver(monkeypatch, index=0):
  ports = [_free_port(), _free_port()]
  for name in ("SLURM_PROCID", "SLURM_STEP_NODELIST"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv("TF_CONFIG", json.dumps({
      "cluster": {"worker": [f"localhost:{p}" for p in ports]},
      "task": {"type": "worker", "index": index}}))
  return cluster.cluster_resolver(), ports


def test_a_missing_peer_is_named_when_the_wait_times_out(monkeypatch):
  resolver, ports = _two_worker_resolver(monkeypatch)  # nothing listens on worker1's port
  with pytest.raises(cluster.PeersUnavailableError,
                     match=rf"gave up after 0.3 s.*worker1 \(localhost:{ports[1]}\)") as e:
    cluster.wait_for_cluster(resolver, 0.3)
  assert "worker0" not in str(e.value)  # this task is not a peer of itself
  assert isinstance(e.value, ConfigError)  # the CLI's one-line error, exit 1
  with pytest.raises(ConfigError, match="peer_timeout_seconds must be > 0"):
    cluster.wait_for_peers({"worker1": f"localhost:{ports[1]}"}, 0)


def test_the_wait_ends_when_the_peer_listens_and_this_task_is_seen_meanwhile(monkeypatch):
  resolver, ports = _two_worker_resolver(monkeypatch)
  seen = []

  def peer():  # the other worker: listens on its port, and sees this one waiting
    import time  # pylint: disable=g-import-not-at-top
    time.sleep(0.3)
    seen.append(cluster._reachable(f"localhost:{ports[0]}", 1.0))
    with socket.socket() as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      s.bind(("", ports[1]))
      s.listen(1)
      done.wait(30)

  import threading  # pylint: disable=g-import-not-at-top
  done = threading.Event()
  thread = threading.Thread(target=peer)
  thread.start()
  try:
    cluster.wait_for_cluster(resolver, 30)
  finally:
    done.set()
    thread.join()
  assert seen == [True]
  assert not cluster._reachable(f"localhost:{ports[0]}", 0.2)  # its own listener is closed again


def test_sigterm_ends_the_wait_for_peers(monkeypatch):
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  resolver, ports = _two_worker_resolver(monkeypatch)
  before = signal.getsignal(signal.SIGTERM)
  timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
  timer.start()
  try:
    with pytest.raises(cluster.PeerWaitInterrupted,
                       match=r"stopped by SIGTERM while waiting for peer\(s\) worker1") as e:
      cluster.wait_for_cluster(resolver, 600)
  finally:
    timer.cancel()
  assert e.value.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before
  assert not cluster._reachable(f"localhost:{ports[0]}", 0.2)


def test_peer_timeout_flag_is_validated():
  assert train.parse_flags(["train", "--workdir=/x"]).peer_timeout_seconds == 600
  assert train.parse_flags(["train", "--workdir=/x",
                            "--peer_timeout_seconds=5"]).peer_timeout_seconds == 5
  with pytest.raises(Exception, match="peer_timeout_seconds"):
    train.parse_flags(["train", "--workdir=/x", "--peer_timeout_seconds=0"])


@pytest.mark.slow
def test_train_with_a_missing_peer_says_so_and_stops_on_sigterm(tmp_path):
  """Only worker 0 of two is started: it says whom it waits for and exits 143 on SIGTERM."""
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  ports = [_free_port(), _free_port()]
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CONFIG=json.dumps({
      "cluster": {"worker": [f"localhost:{p}" for p in ports]},
      "task": {"type": "worker", "index": 0}}))
  proc = subprocess.Popen(
      [sys.executable, "-m", "vapnev_tf.train", "--flagfile=configs/smoke.flags",
       "--strategy=multi_worker", f"--workdir={tmp_path / 'run'}"], cwd=str(REPO_ROOT), env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  lines, waiting = [], threading.Event()

  def read():
    for line in proc.stderr:
      lines.append(line)
      if "Waiting for 1 peer(s)" in line:
        waiting.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert waiting.wait(TRAIN_TIMEOUT), "no line saying what it waits for:\n" + "".join(lines)[-2000:]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=TRAIN_TIMEOUT)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  reader.join(10)
  text = "".join(lines)
  assert proc.returncode == 128 + signal.SIGTERM, text[-2000:]
  assert f"worker1 (localhost:{ports[1]})" in text and "stopped by SIGTERM" in text
  assert "Traceback" not in text
  assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("task, message", [
    ({"type": "worker", "index": 2}, r"worker index 2 is not in the cluster.*2 task\(s\)"),
    ({"type": "ps", "index": 0}, r"task type 'ps' cannot train with strategy=multi_worker"),
    ({"type": "worker", "index": "0"}, r"worker index '0' is not in the cluster"),
])
def test_a_tf_config_task_outside_the_cluster_is_a_clear_error(monkeypatch, task, message):
  monkeypatch.setenv("TF_CONFIG", json.dumps({
      "cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": task}))
  with pytest.raises(ConfigError, match=message):
    cluster.cluster_resolver()


@pytest.mark.parametrize("name, value, message", [
    ("SLURM_PROCID", "abc", r"SLURM_PROCID='abc' is not an integer"),
    ("SLURM_PROCID", "5", r"SLURM_PROCID=5 is not a task"),
    ("SLURM_STEP_NUM_TASKS", "two", r"SLURM_STEP_NUM_TASKS='two' is not an integer"),
    ("SLURM_STEP_TASKS_PER_NODE", "2(x", r"the Slurm environment does not describe a cluster"),
    ("VAPNEV_SLURM_PORT_BASE", "http", r"VAPNEV_SLURM_PORT_BASE='http' is not an integer"),
])
def test_garbled_slurm_variables_are_a_clear_error(monkeypatch, name, value, message):
  env = dict(_slurm_envs(nodes=2, tasks_per_node=1)[0], **{name: value})
  monkeypatch.delenv("TF_CONFIG", raising=False)
  monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  with pytest.raises(ConfigError, match=message):
    cluster.cluster_resolver()
