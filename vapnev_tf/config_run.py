"""The run's config as one dict, its inverse, and the resume comparison.

    {"model": ModelConfig.to_dict(), "data": DataConfig.to_dict(), "train": TrainConfig.to_dict()}

`run_config_dict` is the only producer of that dict: WORKDIR/config.json is written from it (plus
version keys) and the export metadata carries config.json. `configs_from_run_dict` is its inverse;
`config_differences` is what the resume check compares (the RESUMABLE fields are skipped, see
`vapnev_tf.config_fields`; two flow layouts are compared as parsed steps, and the fields a layout
replaces are not compared when both sides have one).
"""
import dataclasses
import json

from vapnev_tf import flow_steps
from vapnev_tf.config import ModelConfig
from vapnev_tf.config_fields import RESUMABLE
from vapnev_tf.data import DataConfig
from vapnev_tf.config import TrainConfig

SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
# Fields older config.json files may hold that no config has any more. They never changed what a
# run computes unless a test set them, so reading a stored config drops them (docs/design.md §20).
RETIRED = {"train": ("debug_inject_nan_at_step", "debug_inject_nan_num_steps")}


def _current(section: str, values: dict) -> dict:
  """`values` of a stored config section without its `RETIRED` fields."""
  retired = RETIRED.get(section, ())
  return {k: v for k, v in values.items() if k not in retired}


def _jsonable(values: dict) -> dict:
  """JSON round trip: tuples become lists, exactly as config.json stores them."""
  return json.loads(json.dumps(values))


def run_config_dict(model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig) -> dict:
  """{"model", "data", "train"}: each config's `to_dict()`, JSON-ready (shapes as lists)."""
  out = {}
  for (section, cls), cfg in zip(SECTIONS.items(), (model_cfg, data_cfg, train_cfg)):
    if not isinstance(cfg, cls):
      raise ValueError(f"run_config_dict: the {section} config must be a {cls.__name__}, got "
                       f"{type(cfg).__name__}.")
    out[section] = _jsonable(cfg.to_dict())
  return out


def configs_from_run_dict(run_config: dict, sections=tuple(SECTIONS)) -> tuple:
  """The configs of `sections` (default all: (ModelConfig, DataConfig, TrainConfig)) from a run
  config dict (e.g. config.json; other keys and `RETIRED` fields are ignored); ValueError naming
  a missing section or an unknown field."""
  out = []
  for section in sections:
    if section not in run_config:
      raise ValueError(f"the run config has no {section!r} section (keys: {sorted(run_config)}).")
    values = run_config[section]
    out.append(SECTIONS[section].from_dict(
        _current(section, values) if isinstance(values, dict) else values))
  return tuple(out)


def config_differences(stored: dict, requested: dict) -> list[str]:
  """"section.field: stored X, requested Y" for every run-defining field whose values differ
  between two run config dicts (a field absent on one side shows as <absent>, except a field the
  stored config predates: absent there, it compares as its declared `absent_means`; a `RETIRED`
  field is not compared)."""
  missing = object()
  diffs = []
  for section, cls in SECTIONS.items():
    free = {f.name for f in dataclasses.fields(cls) if f.metadata["resume"] == RESUMABLE}
    predated = {f.name: f.metadata["absent_means"] for f in dataclasses.fields(cls)
                if f.metadata["absent_means"] is not dataclasses.MISSING}
    old = _jsonable({**predated, **_current(section, stored.get(section, {}))})
    new = _jsonable(_current(section, requested.get(section, {})))
    same = _same_flow(old, new) if section == "model" else set()
    for key in sorted(set(old) | set(new)):
      if key in free or key in same:
        continue
      a, b = old.get(key, missing), new.get(key, missing)
      if a != b:
        diffs.append(f"{section}.{key}: stored {_show(a, missing)}, requested {_show(b, missing)}")
  return diffs


# The fields a non-empty flow_layout replaces (ModelConfig.flow_layout's help).
LAYOUT_REPLACES = ("flow_scales", "flow_checkerboard", "flow_channelwise")


def _same_flow(old: dict, new: dict) -> set:
  """Model fields that do not differ in meaning although their values may: when both sides set
  a flow_layout, the fields it replaces (`LAYOUT_REPLACES`), and flow_layout itself when both
  strings parse to the same steps (spacing, `*1`, default parities are notation, not the flow)."""
  a, b = old.get("flow_layout"), new.get("flow_layout")
  if not (isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip()):
    return set()
  try:
    same_steps = flow_steps.parse_layout(a) == flow_steps.parse_layout(b)
  except ValueError:  # a stored string this grammar cannot read: compare it as written
    same_steps = False
  return set(LAYOUT_REPLACES) | ({"flow_layout"} if same_steps else set())


def _show(value, missing) -> str:
  return "<absent>" if value is missing else repr(value)
