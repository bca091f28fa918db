"""Evaluations during and at the end of a run: evaluate, keep the best checkpoint, report."""
from vapnev_tf.training import evaluation


class EvalRunner:
  """`runner(step, num_samples) -> result`: evaluates the model being trained on the test set.

  One `evaluation.Evaluator` per k, so periodic evaluations reuse one traced step. A result whose
  ELBO beats the best so far is saved to best/ (`Checkpoints.save_if_best`); every result goes to
  the reporter (log line; the chief's TensorBoard and eval.json).
  """

  def __init__(self, run, data_cfg, train_cfg, strategy, reporter):
    self.run, self.data_cfg, self.train_cfg = run, data_cfg, train_cfg
    self.strategy, self.reporter = strategy, reporter
    self._evaluators = {}

  def __call__(self, step: int, num_samples: int) -> dict:
    model = self.run.state.model
    if num_samples not in self._evaluators:
      self._evaluators[num_samples] = evaluation.Evaluator(
          model, self.data_cfg, num_samples=num_samples, seed=self.train_cfg.eval_seed,
          chunk_size=self.train_cfg.eval_chunk_size, strategy=self.strategy)
    result = self._evaluators[num_samples]()
    improved = self.run.checkpoints.save_if_best(step, result["elbo_bpd"])
    checkpoints = self.run.checkpoints
    # The record names a checkpoint only when one holds these weights (a periodic evaluation can
    # come before the step's save); its weights_sha256 identifies the weights either way.
    checkpoint = checkpoints.latest if checkpoints.saved_at == step else None
    self.reporter.evaluation(step, result, improved, checkpoint, model)
    return result
