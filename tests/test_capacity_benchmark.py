"""benchmarks/capacity.py: the attribution rows' flags are ones the training CLI accepts, and
their parameter counts are those of the models built from them (docs/design.md §24)."""
import dataclasses

from benchmarks import capacity

RECIPE = ["--flagfile=configs/smoke.flags", "--flow_receptive_field=local",
          "--kl_free_nats=4", "--kl_free_nats_mode=per_dim"]


def test_the_quadratic_through_three_points_is_exact():
  a, b, c = capacity._quadratic([(1, 7), (2, 17), (5, 83)])  # 3 f^2 + f + 3
  assert (a, b, c) == (3, 1, 3)


def test_rows_are_accepted_by_the_training_cli_and_counted_on_their_models():
  rows = capacity.attribution(RECIPE, extra_res_blocks=1)
  vapnev = rows["vapnev"]
  assert vapnev["params"] == sum(vapnev["parts"].values())
  fixed_cfg = capacity._resolve(rows["vapnev_fixed_z"]["flags"])[0]
  assert fixed_cfg.likelihood == "vapnev_fixed_z"
  assert fixed_cfg.flow_receptive_field == "local"  # the recipe's flow, unchanged
  # The fixed-z model is the recipe without its encoder.
  assert rows["vapnev_fixed_z"]["params"] == vapnev["params"] - vapnev["parts"]["encoder"]
  for row in [rows["realnvp_same_flow"], rows["realnvp_matched"], *rows["alternatives"]]:
    model_cfg, _, train_cfg = capacity._resolve(row["flags"])  # no latent-only option left
    assert model_cfg.likelihood == "realnvp" and train_cfg.kl_free_nats == 0
    assert capacity.count(model_cfg) == row["params"]
  # The matched width is the closest: one filter more or less is farther from the recipe.
  matched_cfg = capacity._resolve(rows["realnvp_matched"]["flags"])[0]
  assert matched_cfg.flow_res_blocks == capacity._resolve(RECIPE)[0].flow_res_blocks
  gap = abs(rows["realnvp_matched"]["params"] - vapnev["params"])
  for f in (matched_cfg.flow_filters - 1, matched_cfg.flow_filters + 1):
    other = capacity.count(dataclasses.replace(matched_cfg, flow_filters=f))
    assert abs(other - vapnev["params"]) >= gap
  assert rows["realnvp_same_flow"]["params"] < rows["realnvp_matched"]["params"]
  lines = capacity.format_rows(rows)
  assert lines[0].startswith("vapnev") and "encoder" in lines[0]
  assert any(line.startswith("realnvp matched") and "--flow_filters=" in line for line in lines)
