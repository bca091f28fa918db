"""absl flags generated from config dataclasses (`vapnev_tf.config_fields` metadata).

A field becomes the flag `flag_name(field)` (its own name unless its metadata says otherwise) with
the field's default and help (plus, for numbers, the bounds in words); a validator runs the
field's own checker (`config_fields.check_field`) on every parsed value, so a bad value (out of
range, NaN, inf) is refused at parse time with "--name must be ..., got ...". Special cases, all
in metadata: `flag_map` (an enum flag whose strings map to values: --flip=default|on|off ->
None/True/False), `flag_none` (a flag value meaning None: --train_take=0), `flag=None` (no flag:
derived by the caller, e.g. ModelConfig.image_shape) and `define_flag=False` (the flag belongs to
another config's field: DataConfig.seed is --seed).
"""
import dataclasses

from absl import flags

from vapnev_tf.config_fields import check_field
from vapnev_tf.config_fields import expectation
from vapnev_tf.config_fields import flag_name
from vapnev_tf.config_fields import float32_note

# The flags defined here belong to the module that calls `define_config_flags` (so `--help` of
# `python -m vapnev_tf.train` lists them as its own).
flags.disclaim_key_flags()


def flag_to_value(meta: dict, flag_value):
  """The field value that a parsed flag value stands for."""
  if meta["flag_map"] is not None:
    return meta["flag_map"][flag_value]
  if meta["flag_none"] is not None and flag_value == meta["flag_none"]:
    return None
  return flag_value


def _flag_default(field: dataclasses.Field):
  meta, default = field.metadata, field.default
  if meta["flag_map"] is not None:
    return next(key for key, value in meta["flag_map"].items() if value == default)
  if default is None and meta["flag_none"] is not None and meta["kind"] in ("int", "float"):
    return meta["flag_none"]  # --train_take defaults to 0 (= None); a str flag stays unset
  return default


def _flag_expectation(meta: dict) -> str:
  """What the flag accepts: the field's expectation, with None spelled as the flag writes it."""
  unset = "unset" if meta["flag_none"] is None else f"{meta['flag_none']!r} (unset)"
  return expectation(meta, none_text=unset)


def flag_help(field: dataclasses.Field) -> str:
  """The help of a field's flag: the field's help, then (for numbers) what it accepts."""
  meta = field.metadata
  if meta["kind"] in ("int", "float") and (meta["lo"] is not None or meta["hi"] is not None):
    return f"{meta['help']} Must be {_flag_expectation(meta)}."
  return meta["help"]


def _validator(name: str, meta: dict):
  """absl validator running the field's checker on the flag's value ("--name must be ...")."""
  def check(flag_value) -> bool:
    try:
      value = flag_to_value(meta, flag_value)
      if meta["flag_none"] is not None and value is None:
        return True
      check_field(meta, value, f"--{name}")
    except ValueError as err:
      note = float32_note(flag_value) if "float32" in str(err) else ""
      raise flags.ValidationError(
          f"--{name} must be {_flag_expectation(meta)}, got {flag_value!r}{note}."
          if str(err).startswith(f"--{name} must be ") else str(err)) from None
    return True
  return check


def define_config_flags(fv: flags.FlagValues, *classes) -> None:
  """Defines on `fv` one flag per field of each config class in `classes` (see module doc)."""
  for cls in classes:
    for field in dataclasses.fields(cls):
      name, meta = flag_name(field), field.metadata
      if name is None or not meta["define_flag"]:
        continue
      default, help_text, kind = _flag_default(field), flag_help(field), meta["kind"]
      kw = dict(flag_values=fv)
      if meta["flag_map"] is not None:
        flags.DEFINE_enum(name, default, list(meta["flag_map"]), help_text, **kw)
      elif kind == "choice":
        flags.DEFINE_enum(name, default, list(meta["choices"]), help_text, **kw)
      elif kind == "int":
        flags.DEFINE_integer(name, default, help_text, **kw)
      elif kind == "float":
        flags.DEFINE_float(name, default, help_text, **kw)
      elif kind == "bool":
        flags.DEFINE_bool(name, default, help_text, **kw)
      elif kind in ("str", "any_str"):
        flags.DEFINE_string(name, default, help_text, **kw)
      else:
        raise ValueError(f"{cls.__name__}.{field.name}: a {kind!r} field cannot be a flag; give it "
                         "flag=None and derive it.")
      flags.register_validator(name, _validator(name, meta), flag_values=fv)


def kwargs_from_flags(fv: flags.FlagValues, cls) -> dict:
  """Keyword arguments of `cls` from the parsed flags `fv`: every field that has a flag (fields
  with `flag=None` are left to the caller)."""
  out = {}
  for field in dataclasses.fields(cls):
    name = flag_name(field)
    if name is not None:
      out[field.name] = flag_to_value(field.metadata, fv[name].value)
  return out
