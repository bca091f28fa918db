"""Config fields that carry their own name, default, bounds, help and resume rule.

Every field of `ModelConfig`, `DataConfig` and `TrainConfig` is declared with one of the
constructors below (`int_field`, `float_field`, ...), which store in `dataclasses.field(metadata=)`
everything else needs:

    help        one line; the help of the generated flag (`vapnev_tf.config_flags`)
    kind        "int", "float", "bool", "str" (non-empty), "any_str", "choice" or "shape"
    lo, hi      numeric bounds; `lo_open` / `hi_open` make them strict
    choices     allowed values of a "choice" field
    optional    None is a valid value
    check       extra check `check(value, label)` raising ValueError (e.g. DataConfig.dataset)
    flag        flag name (default: the field name); None = no flag (derived by the caller)
    define_flag False when the flag is defined by another config's field (DataConfig.seed)
    flag_map    flag string -> field value (an enum flag, e.g. --flip=default|on|off)
    flag_none   flag value that means None (e.g. --train_take=0)
    resume      RUN_DEFINING (must match config.json to resume a run) or RESUMABLE (may change)
    why         one line: why the field is classified so

`ConfigBase` gives a config dataclass its validation (generated from that metadata by
`check_field`, the single checker of every config), `to_dict` and `from_dict`.
"""
import dataclasses
import math
import numbers

import numpy as np

RUN_DEFINING = "run-defining"
RESUMABLE = "resumable"
_MISSING = dataclasses.MISSING


def _field(default, help, kind, *, lo=None, hi=None, lo_open=False, hi_open=False, choices=None,
           optional=False, check=None, flag=_MISSING, define_flag=True, flag_map=None,
           flag_none=None, resume=RUN_DEFINING, why="",
           absent_means=_MISSING):  # pylint: disable=redefined-builtin
  """`absent_means`: for a field added after runs were stored, the value a stored config without
  it had in effect (the behaviour before the field existed), so that those runs still resume;
  undeclared, a stored config that lacks the field differs from any requested value."""
  if resume not in (RUN_DEFINING, RESUMABLE):
    raise ValueError(f"resume must be {RUN_DEFINING!r} or {RESUMABLE!r}, got {resume!r}.")
  metadata = dict(help=help, kind=kind, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open,
                  choices=tuple(choices) if choices is not None else None, optional=optional,
                  check=check, flag=flag, define_flag=define_flag, flag_map=flag_map,
                  flag_none=flag_none, resume=resume, why=why, absent_means=absent_means)
  return dataclasses.field(default=default, metadata=metadata)


def int_field(default, help, **kw):  # pylint: disable=redefined-builtin
  """An int (bounds `lo`/`hi`, inclusive unless `lo_open`/`hi_open`)."""
  return _field(default, help, "int", **kw)


def float_field(default, help, **kw):  # pylint: disable=redefined-builtin
  """A float finite in float32 (NaN, +-inf and magnitudes float32 cannot hold are always refused;
  the bounds hold for the value rounded to float32 too); ints are accepted and stored as float."""
  return _field(default, help, "float", **kw)


def bool_field(default, help, **kw):  # pylint: disable=redefined-builtin
  return _field(default, help, "bool", **kw)


def str_field(default, help, *, nonempty=True, **kw):  # pylint: disable=redefined-builtin
  """A str, non-empty unless `nonempty=False`."""
  return _field(default, help, "str" if nonempty else "any_str", **kw)


def choice_field(default, help, choices, **kw):  # pylint: disable=redefined-builtin
  return _field(default, help, "choice", choices=choices, **kw)


def shape_field(default, help, **kw):  # pylint: disable=redefined-builtin
  """An image shape (H, W, C) of positive ints, stored as a tuple."""
  return _field(default, help, "shape", **kw)


# ---------------------------------------------------------------------------------- validation


def _fmt(bound) -> str:
  return f"{bound:g}" if isinstance(bound, float) else str(bound)


def expectation(meta: dict, none_text: str = "None") -> str:
  """What a field accepts, in words: "an int >= 1", "a finite number in (0, 1)", "> 0 and
  finite", "one of ('a', 'b')", ... (the text after "must be"); an optional field adds
  " or `none_text`"."""
  kind, lo, hi = meta["kind"], meta["lo"], meta["hi"]
  if kind in ("int", "float"):
    if lo is not None and hi is not None:
      interval = (f"{'(' if meta['lo_open'] else '['}{_fmt(lo)}, "
                  f"{_fmt(hi)}{')' if meta['hi_open'] else ']'}")
      text = f"an int in {interval}" if kind == "int" else f"a finite number in {interval}"
    elif lo is not None or hi is not None:
      op = (">" if meta["lo_open"] else ">=") if lo is not None else (
          "<" if meta["hi_open"] else "<=")
      bound = _fmt(lo if lo is not None else hi)
      text = f"an int {op} {bound}" if kind == "int" else f"{op} {bound} and finite"
    else:
      text = "an int" if kind == "int" else "a finite number"
  elif kind == "bool":
    return f"True, False or {none_text}" if meta["optional"] else "True or False"
  elif kind == "str":
    text = "a non-empty str"
  elif kind == "any_str":
    text = "a str"
  elif kind == "choice":
    text = f"one of {meta['choices']}"
  else:
    text = "(H, W, C) with positive ints"
  return text + (f" or {none_text}" if meta["optional"] else "")


def _within_bounds(meta: dict, value) -> bool:
  lo, hi = meta["lo"], meta["hi"]
  if not math.isfinite(value):
    return False
  if lo is not None and not (value > lo if meta["lo_open"] else value >= lo):
    return False
  return hi is None or (value < hi if meta["hi_open"] else value <= hi)


def _as_float32(value: float) -> float:
  """`value` as training computes with it: float32 (learning rate, clip norm, scales...)."""
  with np.errstate(over="ignore"):
    return float(np.float32(value))


def float32_note(value) -> str:
  """Why a value that is fine as a Python float is refused: what it becomes in float32."""
  return (f" (float fields are used in float32, where {value!r} becomes {_as_float32(value)!r}; "
          f"float32 holds magnitudes up to {float(np.finfo(np.float32).max):.7g})")


def check_field(meta: dict, value, label: str):
  """`value` normalised (float fields as float, ints as int, shapes as tuples) if it satisfies the
  field's metadata; ValueError "`label` must be <expectation>, got <value>." otherwise."""
  if value is None and meta["optional"]:
    return None
  kind = meta["kind"]
  ok, out = True, value
  if kind == "int":
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    out = int(value) if ok else value
  elif kind == "float":
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))
    out = float(value) if ok else value
  elif kind == "bool":
    ok = isinstance(value, bool)
  elif kind == "str":
    ok = isinstance(value, str) and bool(value)
  elif kind == "any_str":
    ok = isinstance(value, str)
  elif kind == "choice":
    ok = isinstance(value, str) and value in meta["choices"]
  elif kind == "shape":
    try:
      out = tuple(int(d) for d in value) if not isinstance(value, str) else None
    except (TypeError, ValueError):
      out = None
    ok = (out is not None and len(out) == 3 and min(out) > 0
          and all(float(d) == int(d) for d in value))
  if ok and kind in ("int", "float"):
    ok = _within_bounds(meta, out)
  if ok and kind == "float" and not _within_bounds(meta, _as_float32(out)):
    raise ValueError(f"{label} must be {expectation(meta)}, got {value!r}{float32_note(value)}.")
  if not ok:
    raise ValueError(f"{label} must be {expectation(meta)}, got {value!r}.")
  if meta["check"] is not None:
    meta["check"](out, label)
  return out


def flag_name(field: dataclasses.Field) -> str | None:
  """The flag of `field` (its name unless its metadata says otherwise); None = no flag."""
  flag = field.metadata["flag"]
  return field.name if flag is _MISSING else flag


class ConfigBase:
  """Mixin of the frozen config dataclasses: validation from the field metadata, dict round trip.

  Subclasses may define `_check_consistency(self)` for checks between fields.
  """

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = check_field(f.metadata, getattr(self, f.name), f"{type(self).__name__}.{f.name}")
      object.__setattr__(self, f.name, value)
    self._check_consistency()

  def _check_consistency(self) -> None:
    pass

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict):
    """The config of `values` (missing fields take their defaults); ValueError naming unknown
    fields."""
    if not isinstance(values, dict):
      raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
      raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; expected a subset of "
                       f"{sorted(known)}.")
    return cls(**values)


def describe(cls) -> str:
  """One line per field: name, default, what it accepts, resume rule, help (for docs and --help
  audits)."""
  lines = []
  for f in dataclasses.fields(cls):
    m = f.metadata
    lines.append(f"{f.name} = {f.default!r}: {m['help']} [{expectation(m)}; {m['resume']}]")
  return "\n".join(lines)
