"""Stage 3 of a run: the loop over training steps, with its cadences and its non-finite policy.

    outcome = run_loop(run, train_step, iterator, train_cfg, reporter, evaluate, stop)

Every step: `train_step(run.state, iterator)` (`training.step`), its metrics to the reporter.
Every `log_every` steps a log line; every `eval_every` steps an ELBO evaluation; every
`checkpoint_every` steps a checkpoint unless the step was skipped (non-finite), logged by the
reporter at a modest cadence. At the end (or on SIGTERM/SIGINT, which every worker of a
multi-worker run agrees on: `signals`) the state of the last step is saved: after a skipped step
it equals the last good weights with the counters advanced, a consistent state to resume or
export from.

Non-finite policy: a step whose loss or gradient is not finite is skipped (`training.step`);
`max_consecutive_bad_steps` in a row abort the run; an applied update that leaves a weight
non-finite aborts it at once (those weights cannot recover and are never saved); a run whose
every step was skipped (no update ever applied: `optimizer.iterations` is 0) fails without
saving anything (all `NonFiniteTrainingError`).
"""
import dataclasses

from absl import logging

from vapnev_tf.errors import NonFiniteTrainingError
from vapnev_tf.config import TrainConfig


@dataclasses.dataclass
class LoopOutcome:
  step: int  # the step the loop stopped at
  last_out: dict | None  # metrics of the last step run (None when no step ran)
  interrupted: int | None  # the signal that stopped the loop


def run_loop(run, train_step, iterator, train_cfg: TrainConfig, reporter, evaluate,
             stop) -> LoopOutcome:
  """Trains `run.state` from `run.start_step` to `train_cfg.train_steps` (see the module doc).

  Args:
    run: a `restore.Run` (state and checkpoints).
    train_step: `step.make_train_step(...)`; iterator: the training stream at the start step.
    reporter: a `reporting.Reporter`; evaluate: `evaluation.EvalRunner`.
    stop: a `signals.StopRequest`, checked before every step (`stop.check`); a coordinated one
      (several workers) saves the agreed checkpoint itself.

  Raises:
    NonFiniteTrainingError: see the module docstring.
  """
  state, checkpoints = run.state, run.checkpoints
  s = run.start_step
  last_out, interrupted = None, None
  consecutive_bad = 0
  if s >= train_cfg.train_steps:
    logging.info("Step %d >= train_steps=%d: nothing to train.", s, train_cfg.train_steps)
  while s < train_cfg.train_steps:
    interrupted = stop.check(s, lambda at: _save(checkpoints, reporter, at, final=True))
    if interrupted is not None:
      break
    out = {k: v.numpy() for k, v in train_step(state, iterator).items()}
    s += 1
    last_out = out
    reporter.record(out, s)
    if not out["weights_finite"]:
      _on_non_finite_weights(s, train_cfg, checkpoints.latest)
    if out["ok"]:
      consecutive_bad = 0
    else:
      consecutive_bad += 1
      _on_bad_step(s, out, consecutive_bad, int(state.skipped_steps.numpy()), train_cfg,
                   checkpoints.latest)
    if s % train_cfg.log_every == 0 or s == train_cfg.train_steps:
      reporter.log_window(s, out, int(state.skipped_steps.numpy()))
    if train_cfg.eval_every and s % train_cfg.eval_every == 0 and s < train_cfg.train_steps:
      with reporter.paused():
        evaluate(s, 1)
    if s % train_cfg.checkpoint_every == 0 and consecutive_bad == 0:
      _save(checkpoints, reporter, s)
  if interrupted is None and not stop.coordinated:  # workers of a cluster stop only together
    interrupted = stop.received
  if interrupted is None and s > run.start_step and int(state.optimizer.iterations.numpy()) == 0:
    raise NonFiniteTrainingError(
        f"no step of this run applied an update: all {s} steps had a non-finite loss or "
        f"gradient and were skipped; nothing was saved (latest checkpoint: "
        f"{checkpoints.latest or 'none'}). Lower the learning rate, enable --clip_grad_norm or "
        "check the data.")
  if checkpoints.saved_at != s:
    _save(checkpoints, reporter, s, final=True)
  return LoopOutcome(step=s, last_out=last_out, interrupted=interrupted)


def _save(checkpoints, reporter, s: int, final: bool = False) -> str:
  path = checkpoints.save(s)
  reporter.checkpoint(s, path, final=final)
  return path


def _on_non_finite_weights(s, train_cfg, latest) -> None:
  """The update of step `s` was finite but left some weight NaN or inf: these weights can never
  train again, so the run stops before anything saves them."""
  resume = (f"the last checkpoint ({latest}) holds finite weights; resume from it with a lower "
            "learning rate" if latest else "no checkpoint was written; start again with a lower "
            "learning rate")
  raise NonFiniteTrainingError(
      f"aborting at step {s}: its update left non-finite weights (learning_rate="
      f"{train_cfg.learning_rate:g}, clip_grad_norm={train_cfg.clip_grad_norm:g}); nothing was "
      f"saved from it: {resume}.")


def _on_bad_step(s, out, consecutive_bad, skipped_total, train_cfg, latest) -> None:
  logging.warning("step %d: non-finite loss or gradient (loss %s, grad norm %s); update "
                  "skipped (%d consecutive, %d in total).", s, out["loss"], out["grad_norm"],
                  consecutive_bad, skipped_total)
  if consecutive_bad < train_cfg.max_consecutive_bad_steps:
    return
  if latest:
    saved = (f"Nothing was saved after the last good checkpoint ({latest}); lower the learning "
             "rate, enable --clip_grad_norm or check the data, then resume from it.")
  else:
    saved = ("No checkpoint was written, so the run directory holds no run to resume; lower the "
             "learning rate, enable --clip_grad_norm or check the data, then start again.")
  raise NonFiniteTrainingError(
      f"aborting at step {s}: {consecutive_bad} consecutive steps had a non-finite loss or "
      f"gradient (max_consecutive_bad_steps={train_cfg.max_consecutive_bad_steps}). {saved}")
