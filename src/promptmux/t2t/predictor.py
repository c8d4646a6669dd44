"""`T2TPredictor`: predictions from a text-to-text bundle, and `promptmux eval` for one.

`Predictor.from_pretrained` hands text-to-text bundles to this class, so callers load any bundle
the same way. Classification tasks answer `{"label", "score", "probabilities"}` as the encoder's
do (probabilities: verbalizer scores soft-maxed over the labels); generation tasks `{"text"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from promptmux.serve.predictor import Predictor, TextInput
from promptmux.t2t.bundle import load_t2t_bundle
from promptmux.t2t.infer import predict as predict_rows


class T2TPredictor(Predictor):
    """A `Predictor` over a decoder bundle (inputs are validated as `Predictor.example` does)."""

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", precision: str | None = None) -> T2TPredictor:
        """Load a text-to-text bundle folder, or a run folder (its best bundle)."""
        model, tokenizer, tasks, settings, folder = load_t2t_bundle(path)
        return cls(model.to(device), tokenizer, tasks, settings, folder, precision)  # type: ignore[arg-type]

    def predict(
        self, task: str, inputs: TextInput | Sequence[TextInput], batch_size: int = 16,
        meta: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
    ) -> list[dict[str, Any]]:
        """Predict `task` for each input: a label (classification) or a text (generation)."""
        if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs)):
            inputs = [inputs]
            meta = [meta] if isinstance(meta, dict) else meta
        examples = self.examples(task, inputs, meta)
        if not examples:
            return []
        return predict_rows(self.model, self.tasks[task], examples, self.tokenizer, self.max_length, batch_size, self.precision)


def evaluate_t2t_bundle(path: str | Path, split: str = "dev", overrides: Sequence[str] = (), report_dir: str | Path | None = None) -> dict[str, Any]:
    """`promptmux eval` for a text-to-text bundle: metrics on `split`, eval_<split>.json and
    report_<split>.md, as `promptmux.eval.report.evaluate_bundle` writes for an encoder bundle."""
    from promptmux.eval.report import bundle_config, write_evaluation
    from promptmux.t2t.infer import evaluate
    from promptmux.tasks.build import load_task

    predictor = T2TPredictor.from_pretrained(path)
    cfg = bundle_config(predictor.folder, predictor.tasks, overrides)
    infos = [info for name, info in predictor.tasks.items() if name in cfg.tasks]
    rows = {t.name: load_task(t.name, cfg.tasks[t.name]).split(split) for t in infos}
    metrics = evaluate(predictor.model, infos, rows, predictor.tokenizer, predictor.max_length,
                       cfg.train.eval_batch_size, predictor.precision)
    return write_evaluation(predictor.folder, split, cfg, metrics, {t: len(rows[t]) for t in metrics}, report_dir)
