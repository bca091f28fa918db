"""One config source, finite-model bounds and the resume classification.

Pins every configs/NAME.flags to its resolved config (tests/golden_configs/NAME.json; a change of
a flagfile's values is deliberate and updates its golden copy, with the reason in BUILD_NOTES.md's
decisions and the figures in docs/results.md; CHANGELOG.md lists when), and checks that names,
defaults, bounds and help of the flags come from the config dataclasses.
"""
import contextlib
import dataclasses
import json
import math
import pathlib
import re
import sys

from absl import flags
import pytest

from vapnev_tf import config_flags
from vapnev_tf import loading
from vapnev_tf import train as train_cli
from vapnev_tf import workdir as workdir_lib
from vapnev_tf.config import ModelConfig
from vapnev_tf.config_fields import RESUMABLE
from vapnev_tf.config_fields import RUN_DEFINING
from vapnev_tf.config_fields import describe
from vapnev_tf.config_fields import flag_name
from vapnev_tf.data import DataConfig
from vapnev_tf.training import checkpointing
from vapnev_tf import config_run
from vapnev_tf.config import TrainConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
GOLDEN_DIR = REPO_ROOT / "tests" / "golden_configs"
FLAGFILES = sorted(p.stem for p in (REPO_ROOT / "configs").glob("*.flags") if p.stem != "base")
CLASSES = (ModelConfig, DataConfig, TrainConfig)
# Every flag `python -m vapnev_tf.train` had before the flags were generated.
# New ModelConfig fields, each defaulting to the old behaviour.
FLAGS_ADDED_SINCE = ("flow_layout", "dequantization", "dequantization_filters", "posterior",
                     "iaf_steps", "iaf_hidden", "conditioning", "fused_networks", "compute_dtype",
                     "intra_op_threads", "inter_op_threads", "kl_free_nats", "latent_eval", "committed_rate",
                     "prior", "prior_steps", "kl_cycles", "kl_cycle_ratio", "kl_free_nats_mode",
                     "aggressive_steps", "aggressive_encoder_updates", "flow_receptive_field",
                     "ema_decay", "decoder_filters")
FLAG_NAMES = (
    "workdir force_config seed train_steps strategy num_cpu_devices jit_compile deterministic_ops "
    "learning_rate adam_beta1 adam_beta2 adam_epsilon warmup_steps lr_decay min_lr_fraction "
    "clip_grad_norm kl_anneal_steps kl_schedule log_every eval_every eval_num_samples "
    "eval_chunk_size eval_seed checkpoint_every max_to_keep max_consecutive_bad_steps "
    "sample_temperature num_image_samples export_at_end dataset batch_size eval_batch_size data_dir "
    "fashion_mnist_dir flip shuffle_buffer train_take eval_take validation_fraction likelihood "
    "latent_dim encoder_filters encoder_blocks encoder_layers_per_block flow_scales "
    "flow_checkerboard flow_channelwise flow_filters flow_res_blocks log_scale_bound logit_alpha "
    "min_scale dtype").split()


def parse(*extra, flagfile=None):
  """Flags parsed as `python -m vapnev_tf.train` run from the repository root does."""
  args = ["vapnev_tf.train", "--workdir=/tmp/unused"]
  if flagfile:
    args.append(f"--flagfile={flagfile}")
  with contextlib.chdir(REPO_ROOT):
    return train_cli.parse_flags(args + list(extra))


def resolved(*extra, flagfile=None) -> dict:
  return config_run.run_config_dict(*train_cli.configs_from_flags(parse(*extra,
                                                                        flagfile=flagfile)))


# --- every flagfile resolves to its golden config -----------------------------------------------


def test_every_flagfile_has_a_golden_copy():
  assert FLAGFILES and sorted(p.stem for p in GOLDEN_DIR.glob("*.json")) == FLAGFILES


@pytest.mark.parametrize("name", FLAGFILES)
def test_flagfile_resolves_to_its_golden_config(name):
  golden = json.loads((GOLDEN_DIR / f"{name}.json").read_text())
  assert resolved(flagfile=f"configs/{name}.flags") == golden


@pytest.mark.parametrize("name", FLAGFILES)
def test_benchmark_parser_gives_the_same_config(name):
  sys.path.insert(0, str(REPO_ROOT))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  configs = common.run_configs(name)
  assert configs == train_cli.configs_from_flags(parse(flagfile=f"configs/{name}.flags"))
  assert common.model_config_values(name) == configs[0].to_dict()
  assert ModelConfig(**common.model_config_values(name)) == configs[0]


def test_flags_text_is_unchanged():
  """WORKDIR/flags.txt (`train.run_flags_text`) for --workdir=/tmp/x and configs/smoke.flags.

  Not `flags_into_string()` (every flag of the process, 55 lines, most of them defaults nobody
  chose): flags.txt holds the run's own flags only: those
  given on the command line or in a flagfile (absl's `present`; configs/base.flags counts, as
  smoke.flags includes it), with the value that won, sorted. config.json keeps the complete
  resolved configuration, and flags.txt stays a flagfile that repeats the run. The golden pins
  that rule's output (a flag that appears in or vanishes from it is a visible change)."""
  with contextlib.chdir(REPO_ROOT):
    fv = train_cli.parse_flags(["vapnev_tf.train", "--workdir=/tmp/x",
                                "--flagfile=configs/smoke.flags"])
  golden = (GOLDEN_DIR / "smoke_flags.txt").read_text()
  assert train_cli.run_flags_text(fv) == golden


def test_every_flag_name_still_exists():
  fv = flags.FlagValues()
  train_cli.define_flags(fv)
  assert set(FLAG_NAMES) <= set(fv)
  # ... and belongs to vapnev_tf.train, so `python -m vapnev_tf.train --help` lists it.
  assert set(FLAG_NAMES) <= {f.name for f in fv.get_flags_for_module(train_cli.__name__)}


# --- flags are generated from the dataclasses ---------------------------------------------------


def _flagged_fields():
  for cls in CLASSES:
    for field in dataclasses.fields(cls):
      if flag_name(field) is not None and field.metadata["define_flag"]:
        yield cls, field


def test_flag_help_and_defaults_come_from_the_field_metadata():
  fv = parse()
  seen = 0
  for _, field in _flagged_fields():
    flag, meta = fv[flag_name(field)], field.metadata
    assert config_flags.flag_help(field).startswith(meta["help"])
    choices = meta["flag_map"] or meta["choices"]
    enum = f"<{'|'.join(choices)}>: " if choices else ""  # absl's DEFINE_enum prefix
    assert flag.help == enum + config_flags.flag_help(field)
    assert config_flags.flag_to_value(field.metadata, flag.default) == field.default
    seen += 1
  # all but the four process options of train.py; fields added since keep their own flags
  assert seen == len(set(FLAG_NAMES) | set(FLAGS_ADDED_SINCE)) - 4
  assert fv["latent_dim"].help == "Size of z. Must be an int >= 1."
  assert fv["logit_alpha"].help.endswith("Must be a finite number in (0, 0.5).")


def test_defaults_without_flags_equal_the_dataclass_defaults():
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(parse())
  assert train_cfg == TrainConfig()
  assert data_cfg == DataConfig()
  assert model_cfg == ModelConfig()  # fashion_mnist's 28x28x1 is also the default shape


@pytest.mark.parametrize("flag, field, expected", [
    ("--flip=on", "flip", True), ("--flip=off", "flip", False), ("--flip=default", "flip", None),
    ("--train_take=0", "train_take", None), ("--train_take=5", "train_take", 5),
    ("--eval_take=0", "eval_take", None), ("--data_dir=", "data_dir", None),
    ("--data_dir=/d", "data_dir", "/d"), ("--seed=7", "seed", 7),
])
def test_special_flags_map_to_field_values(flag, field, expected):
  assert resolved(flag)["data"][field] == expected


def test_derived_fields():
  run = resolved("--seed=7", "--dataset=cifar10")
  assert run["train"]["seed"] == run["data"]["seed"] == 7
  assert run["model"]["image_shape"] == [32, 32, 3]


@pytest.mark.parametrize("arg, message", [
    ("--log_scale_bound=inf", r"--log_scale_bound must be a finite number in \(0, 20\]"),
    ("--log_scale_bound=25", "--log_scale_bound must be"),
    ("--log_scale_bound=0", "--log_scale_bound must be"),
    ("--min_scale=1e30", r"--min_scale must be a finite number in \(0, 1\)"),
    ("--min_scale=0", "--min_scale must be"),
    ("--logit_alpha=0", r"--logit_alpha must be a finite number in \(0, 0.5\)"),
    ("--logit_alpha=0.5", "--logit_alpha must be"),
    ("--logit_alpha=nan", "--logit_alpha must be"),
    ("--learning_rate=nan", "--learning_rate must be > 0 and finite, got nan"),
    ("--learning_rate=inf", "--learning_rate must be > 0"),
    ("--learning_rate=1e39", r"got 1e\+39 \(float fields are used in float32, where 1e\+39 "
     "becomes inf"),
    ("--clip_grad_norm=1e39", r"--clip_grad_norm must be >= 0 and finite, got 1e\+39 \(float"),
    ("--adam_epsilon=1e-50", r"--adam_epsilon must be > 0 and finite, got 1e-50 \(float fields "
     r"are used in float32, where 1e-50 becomes 0.0"),
    ("--adam_beta1=1", r"--adam_beta1 must be a finite number in \[0, 1\)"),
    ("--adam_epsilon=0", "--adam_epsilon must be > 0"),
    ("--clip_grad_norm=-inf", "--clip_grad_norm must be >= 0"),
    ("--sample_temperature=nan", "--sample_temperature must be"),
    ("--validation_fraction=1", "--validation_fraction must be"),
    ("--min_lr_fraction=1.5", "--min_lr_fraction must be"),
    ("--batch_size=0", "--batch_size must be an int >= 1, got 0"),
    ("--train_take=-1", r"--train_take must be an int >= 1 or 0 \(unset\)"),
    ("--max_consecutive_bad_steps=0", "--max_consecutive_bad_steps must be an int >= 1"),
    ("--fashion_mnist_dir=", "--fashion_mnist_dir must be a non-empty str"),
    ("--dataset=npz:", "--dataset='npz:' names no path"),
])
def test_out_of_range_flags_are_refused_naming_the_flag(arg, message):
  with pytest.raises(flags.IllegalFlagValueError, match=message):
    parse(arg)


@pytest.mark.parametrize("cls", CLASSES)
def test_nan_and_inf_are_refused_in_every_float_field(cls):
  floats = [f.name for f in dataclasses.fields(cls) if f.metadata["kind"] == "float"]
  assert floats or cls is DataConfig
  for name in floats:
    for bad in (math.nan, math.inf, -math.inf, 1e39, -1e39):  # +-1e39: inf in float32
      with pytest.raises(ValueError,
                         match=rf"{cls.__name__}\.{name} must be .*got {re.escape(repr(bad))}"):
        cls(**{name: bad})


def test_model_bounds_are_refused_by_the_dataclass():
  with pytest.raises(ValueError, match=r"ModelConfig.log_scale_bound must be .*\(0, 20\]"):
    ModelConfig(log_scale_bound=20.5)
  with pytest.raises(ValueError, match="ModelConfig.min_scale"):
    ModelConfig(min_scale=1.0)
  with pytest.raises(ValueError, match="ModelConfig.logit_alpha"):
    ModelConfig(logit_alpha=0.0)
  with pytest.raises(ValueError, match="ModelConfig.latent_dim must be an int >= 1, got True"):
    ModelConfig(latent_dim=True)
  assert ModelConfig(log_scale_bound=20, logit_alpha=1e-6).log_scale_bound == 20.0


# --- dicts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES)
def test_from_dict_refuses_unknown_fields_naming_them(cls):
  with pytest.raises(ValueError, match=rf"unknown {cls.__name__} fields \['bogus', 'zz'\]"):
    cls.from_dict({"bogus": 1, "zz": 2})
  cfg = cls()
  assert cls.from_dict(cfg.to_dict()) == cfg
  assert cls.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # shapes come back as lists


def test_run_config_dict_and_its_inverse():
  configs = train_cli.configs_from_flags(parse(flagfile="configs/smoke.flags"))
  run = config_run.run_config_dict(*configs)
  assert set(run) == {"model", "data", "train"}
  assert json.loads(json.dumps(run)) == run  # what config.json holds
  assert config_run.configs_from_run_dict({**run, "version": "x"}) == configs
  assert config_run.configs_from_run_dict(run, ("model",)) == configs[:1]
  with pytest.raises(ValueError, match="no 'train' section"):
    config_run.configs_from_run_dict({"model": run["model"], "data": run["data"]})
  with pytest.raises(ValueError, match="must be a TrainConfig"):
    config_run.run_config_dict(configs[0], configs[1], configs[0])


def test_workdir_reads_the_configs_back(tmp_path):
  configs = train_cli.configs_from_flags(parse(flagfile="configs/smoke.flags"))
  workdir_lib.write_json_atomic(str(tmp_path / workdir_lib.CONFIG_FILE),
                                {**config_run.run_config_dict(*configs), "version": "x"})
  assert config_run.configs_from_run_dict(workdir_lib.read_config(str(tmp_path))) == configs
  assert loading.model_config(str(tmp_path)) == configs[0]


# --- resume: which fields must match ------------------------------------------------------------


def test_every_field_is_classified_for_resume_with_a_reason():
  for cls in CLASSES:
    for field in dataclasses.fields(cls):
      meta = field.metadata
      assert meta["resume"] in (RUN_DEFINING, RESUMABLE), (cls.__name__, field.name)
      if cls is TrainConfig or meta["resume"] == RESUMABLE:
        assert meta["why"], (cls.__name__, field.name)
  assert {f.metadata["resume"] for f in dataclasses.fields(ModelConfig)} == {RUN_DEFINING}
  train = {f.name: f.metadata["resume"] for f in dataclasses.fields(TrainConfig)}
  for name in ("seed", "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon", "warmup_steps",
               "lr_decay", "min_lr_fraction", "clip_grad_norm", "kl_anneal_steps", "kl_schedule"):
    assert train[name] == RUN_DEFINING, name
  for name in ("train_steps", "log_every", "eval_every", "eval_num_samples", "checkpoint_every",
               "export_at_end", "max_consecutive_bad_steps"):
    assert train[name] == RESUMABLE, name
  assert "resumable" in describe(TrainConfig) and "latent_dim = 256" in describe(ModelConfig)


def test_config_differences_compare_run_defining_fields_only():
  stored = resolved(flagfile="configs/smoke.flags")
  same = resolved("--train_steps=60", "--eval_every=5", "--log_every=1", "--eval_batch_size=8",
                  "--strategy=one_device", "--export_at_end", flagfile="configs/smoke.flags")
  assert config_run.config_differences(stored, same) == []
  changed = resolved("--learning_rate=5e-4", "--kl_schedule=sigmoid", "--latent_dim=9",
                     "--batch_size=8", flagfile="configs/smoke.flags")
  assert config_run.config_differences(stored, changed) == [
      "model.latent_dim: stored 8, requested 9",
      "data.batch_size: stored 16, requested 8",
      "train.kl_schedule: stored 'linear', requested 'sigmoid'",
      "train.learning_rate: stored 0.001, requested 0.0005"]
  del stored["train"]["clip_grad_norm"]
  assert config_run.config_differences(stored, same) == [
      "train.clip_grad_norm: stored <absent>, requested 0.0"]


def test_flow_layouts_are_compared_as_steps_and_replace_the_fields_they_override():
  glow = "squeeze (actnorm invconv channel)*2"
  stored = resolved(f"--flow_layout={glow}", "--flow_checkerboard=1",
                    flagfile="configs/smoke.flags")
  spaced = resolved("--flow_layout=  squeeze   (actnorm  invconv channel) * 2 ".replace(" * ", "*"),
                    "--flow_checkerboard=3", "--flow_channelwise=2", "--flow_scales=2",
                    flagfile="configs/smoke.flags")
  assert config_run.config_differences(stored, spaced) == []
  other = resolved("--flow_layout=squeeze (actnorm invconv channel)*3",
                   flagfile="configs/smoke.flags")
  assert config_run.config_differences(stored, other) == [
      f"model.flow_layout: stored {glow!r}, requested 'squeeze (actnorm invconv channel)*3'"]
  # without a layout on both sides the three fields define the flow and are compared
  assert config_run.config_differences(
      resolved(flagfile="configs/smoke.flags"),
      resolved("--flow_checkerboard=2", flagfile="configs/smoke.flags")) == [
          "model.flow_checkerboard: stored 1, requested 2"]


def test_a_run_stored_before_a_field_existed_compares_as_the_fields_absent_means():
  # kl_free_nats declares absent_means=0.0: runs stored before it trained without free bits
  stored = resolved(flagfile="configs/smoke.flags")
  del stored["train"]["kl_free_nats"]
  assert config_run.config_differences(stored, resolved(flagfile="configs/smoke.flags")) == []
  assert config_run.config_differences(
      stored, resolved("--kl_free_nats=2", flagfile="configs/smoke.flags")) == [
          "train.kl_free_nats: stored 0.0, requested 2.0"]


def test_resume_check_refuses_a_changed_train_field(tmp_path):
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(
      parse(flagfile="configs/smoke.flags"))
  workdir_lib.write_json_atomic(str(tmp_path / workdir_lib.CONFIG_FILE),
                                config_run.run_config_dict(model_cfg, data_cfg, train_cfg))
  longer = dataclasses.replace(train_cfg, train_steps=100, eval_every=10)
  assert checkpointing.check_resume_config(str(tmp_path), model_cfg, data_cfg, longer) is not None
  faster = dataclasses.replace(train_cfg, learning_rate=5e-4)
  with pytest.raises(checkpointing.ConfigError,
                     match=r"train.learning_rate: stored 0.001, requested 0.0005.*--force_config"):
    checkpointing.check_resume_config(str(tmp_path), model_cfg, data_cfg, faster)
  checkpointing.check_resume_config(str(tmp_path), model_cfg, data_cfg, faster, force=True)


def test_a_run_stored_with_retired_test_fields_still_resumes_and_loads(tmp_path):
  """config.json of runs made before the NaN test hook left the config (docs/design.md §20)."""
  model_cfg, data_cfg, train_cfg = train_cli.configs_from_flags(
      parse(flagfile="configs/smoke.flags"))
  stored = config_run.run_config_dict(model_cfg, data_cfg, train_cfg)
  stored["train"].update(debug_inject_nan_at_step=3, debug_inject_nan_num_steps=1)
  workdir_lib.write_json_atomic(str(tmp_path / workdir_lib.CONFIG_FILE), stored)
  assert config_run.config_differences(
      stored, config_run.run_config_dict(model_cfg, data_cfg, train_cfg)) == []
  assert checkpointing.check_resume_config(str(tmp_path), model_cfg, data_cfg,
                                           train_cfg) is not None
  assert config_run.configs_from_run_dict(stored) == (model_cfg, data_cfg, train_cfg)
  # Only the retired names are dropped: any other unknown field is still refused by name.
  stored["train"]["debug_inject_nan_at_stepp"] = 3
  with pytest.raises(ValueError, match="debug_inject_nan_at_stepp"):
    config_run.configs_from_run_dict(stored)


def test_retired_test_flags_are_unknown_flags():
  for flag in ("--debug_inject_nan_at_step=3", "--debug_inject_nan_num_steps=2",
               "--debug_result_file=/tmp/r.json"):
    with pytest.raises(flags.UnrecognizedFlagError):
      parse(flag)
