"""Caption metrics written from their papers: corpus BLEU-4 (Papineni et al. 2002) and CIDEr-D (Vedantam et
al. 2015, as the COCO caption evaluation defines it: tf-idf n-gram vectors, clipped hypothesis weights,
Gaussian length penalty sigma 6, x10), plus the inspection attributes read back from an apple caption."""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from fovea.caption.vocab import words


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU-4: clipped n-gram precisions (n = 1..4) pooled over the corpus, geometric mean, brevity
    penalty against the reference length closest to each hypothesis (shorter on ties). 0 if any precision is 0."""
    matches, totals = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        h = words(hyp)
        rs = [words(r) for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, 5):
            counts = _ngrams(h, n)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    if min(matches) == 0 or hyp_len == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str]], sigma: float = 6.0) -> float:
    """Corpus CIDEr-D: mean over images of 10 x mean over n = 1..4 and over references of the clipped
    tf-idf cosine times exp(-(len_hyp - len_ref)^2 / (2 sigma^2)); document frequencies over the references."""
    refs_tok = [[words(r) for r in refs] for refs in references]
    n_images = len(refs_tok)
    df: Counter = Counter()
    for refs in refs_tok:
        df.update({g for r in refs for n in range(1, 5) for g in _ngrams(r, n)})
    log_n = math.log(float(n_images))

    def vec(tokens):
        out = []
        for n in range(1, 5):
            v = {g: c * (log_n - math.log(max(1.0, df[g]))) for g, c in _ngrams(tokens, n).items()}
            out.append((v, math.sqrt(sum(x * x for x in v.values()))))
        return out

    scores = []
    for hyp, refs in zip(hypotheses, refs_tok, strict=True):
        h = words(hyp)
        hv = vec(h)
        per_ref = []
        for r in refs:
            rv = vec(r)
            sims = []
            for (vh, nh), (vr, nr) in zip(hv, rv):
                dot = sum(min(w, vr[g]) * vr[g] for g, w in vh.items() if g in vr)
                sims.append(dot / (nh * nr) if nh > 0 and nr > 0 else 0.0)
            penalty = math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma ** 2))
            per_ref.append(penalty * sum(sims) / 4)
        scores.append(10.0 * sum(per_ref) / len(per_ref))
    return sum(scores) / max(len(scores), 1)


_KINDS = {"bruise": "bruise", "bruised": "bruise", "spots": "spot", "spotted": "spot", "cut": "cut"}
_GOOD = {"good", "fresh", "healthy", "perfect", "unblemished", "flawless"}
_POSITIONS = ("in the centre", "on the left side", "on the right side", "at the top", "at the bottom")
_SIZES = ("small", "medium", "large")


def read_apple_caption(text: str) -> dict:
    """The attributes an apple caption states: damaged (True/False/None), kind, position, size (None if absent)."""
    w = words(text)
    kind = next((_KINDS[t] for t in w if t in _KINDS), None)
    damaged = True if ("damaged" in w or kind) else False if _GOOD & set(w) else None
    joined = " ".join(w)
    position = next((p for p in _POSITIONS if p in joined), None)
    size = next((s for s in _SIZES if s in w), None)
    return {"damaged": damaged, "kind": kind, "position": position, "size": size}


def attribute_accuracy(captions: Sequence[str], truths: Sequence[dict]) -> dict[str, float]:
    """Fractions of images whose caption states the true attribute: damaged (all images); kind, position and
    size (damaged images; truth keys main_kind, position, size as `fovea.synth.captions` writes them)."""
    read = [read_apple_caption(c) for c in captions]
    damaged = [t for t in range(len(truths)) if truths[t]["damaged"]]
    acc = {"damaged": sum(r["damaged"] == t["damaged"] for r, t in zip(read, truths)) / max(len(truths), 1)}
    for key, truth_key in (("kind", "main_kind"), ("position", "position"), ("size", "size")):
        acc[key] = sum(read[i][key] == truths[i][truth_key] for i in damaged) / max(len(damaged), 1)
    return acc
