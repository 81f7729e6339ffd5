"""Question / answer records from lifted objects, and their ground truth from exact geometry.

`generate_questions` samples up to `per_type` questions of every type per scene (seeded), decides
each from the definitions in `fovea.spatial.definitions`, phrases it with `templates` and `language`,
and counts every question it does not ask by reason (objects flagged border / occluded, same-name
objects that cannot be told apart, near ties inside the margin for the types that skip them, too few
objects, values too small for a relative error). `attach_truth` recomputes each record's value from
exact geometry with the same definition.

Record (one JSON line): scene, qid, type, kind, question, answer, value (number, 'yes'/'no'/'same', or
an object id), unit, objects (ids), phrases, definition, margin (qualitative), depth_source; after
attach_truth also truth (value or label) and, for yes/no kinds, truth_sign (the sign of the true
comparison, no margin).
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from fovea.spatial import templates as T
from fovea.spatial.definitions import TYPES, among, decide, fits, on_top, quantity, relation
from fovea.spatial.language import (
    disambiguate, format_area, format_clock, format_count, format_length, plural,
)
from fovea.spatial.lift import ObjectGeometry

# quantities that are asked only when the estimated value is at least this (relative errors of
# near-zero values mean nothing); the skip is counted
MIN_VALUE_M = {"gap_distance": 0.03, "vertical_distance": 0.05, "horizontal_distance": 0.05, "centre_distance": 0.05}
# a length is asked only when it is >= this many times its uncertainty (sigma; sqrt(2) sigma for an
# extent, the difference of two noisy ends), i.e. an expected relative error below ~10 %
RESOLUTION_FACTOR = 8.0
PAIR_QUANTITIES = ("centre_distance", "gap_distance", "vertical_distance", "horizontal_distance")
SIZE_QUANTITIES = ("width", "height", "depth_extent", "footprint_area")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fmt_value(qtype: str, v: float, imperial: bool) -> str:
    unit = TYPES[qtype].unit
    if unit == "m2":
        return format_area(v, imperial)
    if unit == "hour":
        return format_clock(int(v))
    if unit == "count":
        return format_count(int(v))
    return format_length(v, imperial)


def _fill(template: str, **kw) -> str:
    out = template
    for k, v in kw.items():
        out = out.replace("{" + k + "}", str(v))
    return _cap(out)


class _Builder:
    """Collects records for one scene."""

    def __init__(self, scene_id: str, rng: np.random.Generator, imperial: bool, depth_source: str):
        self.scene_id, self.rng, self.imperial, self.source = scene_id, rng, imperial, depth_source
        self.records: list[dict] = []
        self.skipped: Counter = Counter()

    def pick(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def add(self, qtype: str, question: str, answer: str, value, objects: list[int], phrases: list[str], **extra):
        rec = {"scene": self.scene_id, "qid": f"{self.scene_id}/q{len(self.records):04d}", "type": qtype,
               "kind": TYPES[qtype].kind, "question": question, "answer": answer, "value": value,
               "unit": TYPES[qtype].unit, "objects": objects, "phrases": phrases,
               "definition": TYPES[qtype].definition, "depth_source": self.source, **extra}
        self.records.append(rec)


def _relation_questions(b: _Builder, objs, ph, per_type: int) -> None:
    pairs = [(x, y) for x, y in itertools.permutations(objs, 2)]
    for rel in T.RELATIONS:
        for form in ("predicate", "choice"):
            qtype = f"{rel}_{form}"
            order = b.rng.permutation(len(pairs))[:per_type]
            if not len(pairs):
                b.skipped[f"{qtype}: fewer than 2 usable objects"] += 1
            for i in order:
                x, y = pairs[i]
                d, m = relation(rel, x, y)
                lab = decide(d, m)
                A, B = ph[x.id], ph[y.id]
                q = _fill(b.pick(T.relation_questions(rel, form == "choice")), A=A, B=B)
                words = T.RELATIONS[rel]
                if lab == "same":
                    ans, value = _fill(b.pick(T.SAME), A=A, B=B, S=words[2]), "same"
                elif form == "predicate":
                    ans = _fill(b.pick(T.PRED_YES if lab == "yes" else T.PRED_NO), A=A, B=B, R=b.pick(words[0]))
                    value = lab
                else:
                    win = x if lab == "yes" else y
                    ans = _fill(b.pick(T.CHOICE_ANSWERS), W=ph[win.id], R=b.pick(words[1]))
                    value = win.id
                b.add(qtype, q, ans, value, [x.id, y.id], [A, B], margin=m, d_est=d)


def _quantity_questions(b: _Builder, objs, ph, per_type: int, camera: np.ndarray) -> None:
    pairs = [(x, y) for x, y in itertools.combinations(objs, 2)]
    for qtype in (*PAIR_QUANTITIES, "direction_clock"):
        cand = pairs if qtype != "direction_clock" else list(itertools.permutations(objs, 2))
        for i in b.rng.permutation(len(cand))[:per_type]:
            x, y = cand[i]
            if qtype == "direction_clock":
                if quantity("horizontal_distance", x, y) < 0.1:
                    b.skipped["direction_clock: objects closer than 10 cm horizontally"] += 1
                    continue
            v = quantity(qtype, x, y)
            if qtype != "direction_clock" and v < RESOLUTION_FACTOR * np.hypot(x.sigma_m, y.sigma_m):
                b.skipped[f"{qtype}: below the depth resolution"] += 1
                continue
            if qtype in MIN_VALUE_M and v < MIN_VALUE_M[qtype]:
                b.skipped[f"{qtype}: value below {MIN_VALUE_M[qtype] * 100:.0f} cm"] += 1
                continue
            A, B = ph[x.id], ph[y.id]
            X = _fmt_value(qtype, v, b.imperial)
            b.add(qtype, _fill(b.pick(T.QUANTITY_Q[qtype]), A=A, B=B),
                  _fill(b.pick(T.QUANTITY_A[qtype]), A=A, B=B, X=X), v, [x.id, y.id], [A, B])
    for qtype in (*SIZE_QUANTITIES, "distance_from_camera", "elevation"):
        for i in b.rng.permutation(len(objs))[:per_type]:
            x = objs[i]
            v = quantity(qtype, x, camera=camera)
            scale = float(min(x.rect_sides)) if qtype == "footprint_area" else v
            if scale < RESOLUTION_FACTOR * np.sqrt(2) * x.sigma_m:
                b.skipped[f"{qtype}: below the depth resolution"] += 1
                continue
            A = ph[x.id]
            X = _fmt_value(qtype, v, b.imperial)
            b.add(qtype, _fill(b.pick(T.QUANTITY_Q[qtype]), A=A), _fill(b.pick(T.QUANTITY_A[qtype]), A=A, X=X),
                  v, [x.id], [A])


def _among_questions(b: _Builder, objs, ph, per_type: int) -> None:
    for qtype in ("closest_to", "farthest_from"):
        if len(objs) < 4:
            b.skipped[f"{qtype}: fewer than 4 usable objects"] += 1
            continue
        for i in b.rng.permutation(len(objs))[:per_type]:
            a = objs[i]
            others = [o for o in objs if o.id != a.id]
            k = min(len(others), int(b.rng.integers(3, 5)))
            cands = [others[j] for j in b.rng.permutation(len(others))[:k]]
            win, lead, m = among(qtype, a, cands)
            if lead <= m:
                b.skipped[f"{qtype}: no clear winner (inside the margin)"] += 1
                continue
            names = [ph[c.id] for c in cands]
            N = ", ".join(names[:-1]) + " or " + names[-1]
            b.add(qtype, _fill(b.pick(T.AMONG_Q[qtype]), A=ph[a.id], N=N), _fill(b.pick(T.AMONG_A), W=ph[win]),
                  win, [a.id] + [c.id for c in cands], [ph[a.id]] + names, margin=m)


def _other_questions(b: _Builder, objs, stacked, ph, counts: dict[str, int], per_type: int) -> None:
    names = list(counts)
    for i in b.rng.permutation(len(names))[:per_type]:
        name = names[i]
        b.add("count", _fill(b.pick(T.COUNT_Q), names=plural(name)),
              _fill(b.pick(T.COUNT_A), K=format_count(counts[name])), counts[name], [], [name], name=name)
    triples = list(itertools.permutations(objs, 3))
    n_fit = 0
    for i in b.rng.permutation(len(triples)):
        if n_fit >= per_type:
            break
        c, a, bb = triples[i]
        if a.id > bb.id:
            continue
        d, m = fits(c, a, bb)
        if abs(d) <= m:
            b.skipped["fits_between: inside the margin"] += 1
            continue
        A, B, C = ph[a.id], ph[bb.id], ph[c.id]
        lab = "yes" if d > 0 else "no"
        b.add("fits_between", _fill(b.pick(T.FITS_Q), A=A, B=B, C=C),
              _fill(b.pick(T.FITS_YES if lab == "yes" else T.FITS_NO), A=A, B=B, C=C), lab, [c.id, a.id, bb.id],
              [C, A, B], margin=m, d_est=d)
        n_fit += 1
    if len(objs) < 3:
        b.skipped["fits_between: fewer than 3 usable objects"] += 1
    pairs = [(x, y) for x, y in itertools.permutations(stacked, 2)]
    # every resting-on pair first, then random pairs (mostly 'no')
    pairs.sort(key=lambda p: (p[0].support_id != p[1].id, b.rng.random()))
    for x, y in pairs[: max(per_type, 1)]:
        yes, clear = on_top(x, y)
        if not clear:
            b.skipped["on_top_of: near tie"] += 1
            continue
        A, B = ph[x.id], ph[y.id]
        b.add("on_top_of", _fill(b.pick(T.TOP_Q), A=A, B=B), _fill(b.pick(T.TOP_YES if yes else T.TOP_NO), A=A, B=B),
              "yes" if yes else "no", [x.id, y.id], [A, B])


def generate_questions(objects: list[ObjectGeometry], counts: dict[str, int], camera: np.ndarray, scene_id: str,
                       seed: int = 0, per_type: int = 2, imperial: bool = False,
                       depth_source: str = "render") -> tuple[list[dict], Counter]:
    """All question types for one scene -> (records, skipped reasons). camera: (3,) canonical position."""
    b = _Builder(scene_id, np.random.default_rng(seed), imperial, depth_source)
    phrases, n_amb = disambiguate(objects)
    if n_amb:
        b.skipped["object: same-name objects not separable by position"] += n_amb
    named = [g for g in objects if g.id in phrases]
    usable = [g for g in named if g.reliable]
    b.skipped["object: mask touches the image border"] += sum(g.border for g in named)
    b.skipped["object: occluded by a nearer object"] += sum(g.occluded and not g.border for g in named)
    b.skipped["object: under 80 % of its mask has depth"] += sum(not (g.border or g.occluded) and not g.reliable
                                                                 for g in named)
    _relation_questions(b, usable, phrases, per_type)
    _quantity_questions(b, usable, phrases, per_type, camera)
    _among_questions(b, usable, phrases, per_type)
    _other_questions(b, usable, [g for g in named if not g.border], phrases, counts, per_type)
    return b.records, +b.skipped


def attach_truth(records: list[dict], truth: dict[int, ObjectGeometry], counts: dict[str, int],
                 camera: np.ndarray) -> None:
    """Add truth (and truth_sign for yes/no kinds) to every record in place, from exact geometry."""
    for r in records:
        ids = r["objects"]
        t = [truth[i] for i in ids]
        kind, qtype = r["kind"], r["type"]
        if kind in ("predicate", "choice"):
            rel = qtype.rsplit("_", 1)[0]
            d, m = relation(rel, t[0], t[1])
            lab = decide(d, m)
            r["truth_sign"] = "yes" if d > 0 else "no"
            if kind == "predicate":
                r["truth"] = lab
            else:
                r["truth"] = "same" if lab == "same" else (ids[0] if lab == "yes" else ids[1])
                r["truth_sign"] = ids[0] if d > 0 else ids[1]
            r["truth_margin"] = m
        elif kind in ("quantity", "clock"):
            r["truth"] = quantity(qtype, t[0], t[1] if len(t) > 1 else None, camera=camera)
        elif kind == "among":
            win, lead, _ = among(qtype, t[0], t[1:])
            r["truth"] = win
            r["truth_sign"] = win
        elif kind == "count":
            r["truth"] = counts.get(r["name"], 0)
        elif kind == "fits":
            d, _ = fits(t[0], t[1], t[2])
            r["truth"] = r["truth_sign"] = "yes" if d > 0 else "no"
        elif kind == "on_top":
            r["truth"] = r["truth_sign"] = "yes" if t[0].support_id == t[1].id else "no"
