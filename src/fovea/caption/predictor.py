"""`CaptionPredictor`: any runtime of a caption pipeline -> `CaptionResult`s (text, tokens, mean log-prob)."""

from __future__ import annotations

import numpy as np

from fovea.caption.pipeline import CaptionPipeline
from fovea.caption.vocab import EOS, Vocab
from fovea.core import CaptionResult
from fovea.engine.predictor import Predictor
from fovea.engine.tasks import TaskDef, register_task


class CaptionPredictor(Predictor):
    kind = "caption"

    @property
    def vocab(self) -> Vocab:
        if not hasattr(self, "_vocab"):
            self._vocab = Vocab(self.config["vocab"])
        return self._vocab

    def make_results(self, outputs, paths):
        tokens, logprobs = outputs[:2]
        results = []
        for ids, lp, path in zip(np.asarray(tokens), np.asarray(logprobs), paths):
            ids = [int(i) for i in ids]
            n = ids.index(EOS) if EOS in ids else len(ids)
            kept = lp[: min(n + 1, len(ids))]
            results.append(CaptionResult(text=self.vocab.decode(ids[:n]), tokens=np.asarray(ids[:n], np.int64),
                                         mean_logprob=float(np.mean(kept)) if len(kept) else 0.0, image_path=path))
        return results


register_task(TaskDef("caption", CaptionPipeline, CaptionPredictor, cli="fovea caption"))
