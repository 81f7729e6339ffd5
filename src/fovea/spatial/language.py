"""Numbers in words and back: human-like rounding with units, a deterministic unit parser, object names.

Rounding (metric, the default): < 1 cm in mm (one decimal); < 20 cm in cm with one decimal; < 1 m
in whole cm; < 3 m in m with two decimals; < 20 m with one; beyond, whole metres. Imperial: < 20 in
in inches with one decimal, < 10 ft as feet and whole inches, < 20 ft in feet with one decimal,
beyond whole feet. Areas: cm^2 below 0.1 m^2 (3 significant digits), else m^2 with two decimals
(square inches / square feet imperial). The rounding error is at most 2.5 %, far inside the 25 %
evaluation band (tested by a format -> parse round trip).

Parser (`parse_length`, `parse_area`, `parse_count`, `parse_clock`): numbers as digits or words
("two and a half", "one point five", "a dozen"), units m, cm, mm, km, in, ft, yd (symbols, singular,
plural, British and American spelling, ' and "), consecutive pairs added ("3 feet 4 inches"). No
number or no unit -> None (the evaluator counts it as unparsed, never guesses a unit).
"""

from __future__ import annotations

import re

import numpy as np

UNIT_M = {"mm": 0.001, "millimeter": 0.001, "millimetre": 0.001, "cm": 0.01, "centimeter": 0.01,
          "centimetre": 0.01, "m": 1.0, "meter": 1.0, "metre": 1.0, "km": 1000.0, "kilometer": 1000.0,
          "kilometre": 1000.0, "in": 0.0254, "inch": 0.0254, '"': 0.0254, "ft": 0.3048, "foot": 0.3048,
          "feet": 0.3048, "'": 0.3048, "yd": 0.9144, "yard": 0.9144}
_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_WORDS.update({w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())})
_WORDS.update({"a": 1, "an": 1, "dozen": 12, "half": 0.5, "quarter": 0.25})
COUNT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


# ---- formatting --------------------------------------------------------------------------------------
def _num(x: float, decimals: int) -> str:
    s = f"{x:.{decimals}f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


def format_length(value_m: float, imperial: bool = False) -> str:
    """Metres -> human-like text with a unit (module doc); rounding error <= 2.5 % above 1 cm / 1 in."""
    v = abs(float(value_m))
    if imperial:
        inches = v / 0.0254
        if inches < 20:
            return f"{_num(inches, 1)} inches"
        if inches < 120:
            ft, rest = divmod(int(round(inches)), 12)
            return f"{ft} feet" if rest == 0 else f"{ft} feet {rest} inches"
        return f"{_num(inches / 12, 1 if inches < 240 else 0)} feet"
    if v < 0.01:
        return f"{_num(v * 1000, 1)} mm"
    if v < 0.2:
        return f"{_num(v * 100, 1)} cm"
    if v < 1.0:
        return f"{int(round(v * 100))} cm"
    if v < 3.0:
        return f"{_num(v, 2)} meters"
    if v < 20.0:
        return f"{_num(v, 1)} meters"
    return f"{int(round(v))} meters"


def _sig(x: float, digits: int = 3) -> str:
    return _num(float(f"{x:.{digits}g}"), 6)


def format_area(value_m2: float, imperial: bool = False) -> str:
    """Square metres -> text with a unit."""
    v = abs(float(value_m2))
    if imperial:
        sq_in = v / 0.0254**2
        return f"{_sig(sq_in)} square inches" if sq_in < 144 else f"{_num(v / 0.3048**2, 1)} square feet"
    return f"{_sig(v * 1e4)} square centimeters" if v < 0.1 else f"{_num(v, 2)} square meters"


def format_clock(hour: int) -> str:
    return f"{int(hour)} o'clock"


def format_count(n: int) -> str:
    return COUNT_WORDS[n] if 0 <= n < len(COUNT_WORDS) else str(n)


# ---- parsing ---------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+|['\"]")


def _numbers_and_units(text: str) -> list[tuple[float, str | None]]:
    """Scan text -> [(number, following unit word or None)], number words folded to values."""
    toks = _TOKEN.findall(text.lower().replace("²", " 2").replace("^2", " 2"))
    out: list[tuple[float, str | None]] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        val = None
        if t[0].isdigit():
            val = float(t.replace(",", "."))
            i += 1
        elif t in _WORDS and not (t in ("a", "an") and (i + 1 >= len(toks) or toks[i + 1] not in _WORDS)):
            val = 0.0
            while i < len(toks) and (toks[i] in _WORDS or toks[i] in ("and", "point")):
                w = toks[i]
                if w == "point" and i + 1 < len(toks) and toks[i + 1] in _WORDS:
                    val += _WORDS[toks[i + 1]] / 10
                    i += 2
                    continue
                if w == "and":
                    if i + 1 < len(toks) and toks[i + 1] in ("a", "an", "half", "quarter"):
                        i += 1
                        continue
                    break
                if w in ("half", "quarter") and val >= 1 and toks[i - 1] in ("a", "an"):
                    val += _WORDS[w] - 1  # "two and a half": the "a" counted 1
                elif w in ("half", "quarter") and val == 1 and toks[i - 1] in ("a", "an"):
                    val = _WORDS[w]
                elif w == "dozen":
                    val = max(val, 1) * 12
                else:
                    val += _WORDS[w]
                i += 1
            if val == 0 and toks[i - 1] != "zero":
                continue
        else:
            i += 1
            continue
        unit = toks[i] if i < len(toks) else None
        out.append((val, unit))
    return out


def _unit_scale(word: str | None) -> float | None:
    if word is None:
        return None
    for w in (word, word[:-1] if word.endswith("s") else None, word[:-2] if word.endswith("es") else None):
        if w and w in UNIT_M:
            return UNIT_M[w]
    return None


def parse_length(text: str) -> float | None:
    """Text -> metres (sum of consecutive number-unit pairs), or None without a number with a unit."""
    total, found = 0.0, False
    for val, unit in _numbers_and_units(text):
        s = _unit_scale(unit)
        if s is None:
            if found:
                break
            continue
        total += val * s
        found = True
    return total if found else None


def parse_area(text: str) -> float | None:
    """Text -> square metres ("48 square centimeters", "0.3 m^2", "2 sq ft"), or None."""
    t = text.lower()
    m = re.search(r"(\d+(?:[.,]\d+)?)\s*(?:square|sq\.?)\s*([a-z]+)", t)
    if m:
        s = _unit_scale(m.group(2))
        return None if s is None else float(m.group(1).replace(",", ".")) * s * s
    m = re.search(r"(\d+(?:[.,]\d+)?)\s*([a-z]+)\s*(?:²|\^2|2\b|squared)", t)
    if m:
        s = _unit_scale(m.group(2))
        return None if s is None else float(m.group(1).replace(",", ".")) * s * s
    return None


def parse_count(text: str) -> int | None:
    """First number (digits or words) in the text, as an int."""
    nums = _numbers_and_units(text)
    return int(round(nums[0][0])) if nums else None


def parse_clock(text: str) -> int | None:
    """'3 o'clock', 'three o'clock', 'at 11' -> hour 1..12, or None."""
    nums = [v for v, _ in _numbers_and_units(text) if 1 <= v <= 12 and float(v).is_integer()]
    return int(nums[0]) if nums else None


def parse_yes_no(text: str) -> str | None:
    """'yes' | 'no' | 'same' from the first such word, None if none."""
    m = re.search(r"\b(yes|correct|that's right|true|no|not|incorrect|false|same|neither|equal|too close)\b",
                  text.lower())
    if not m:
        return None
    w = m.group(1)
    if w in ("yes", "correct", "that's right", "true"):
        return "yes"
    return "no" if w in ("no", "not", "incorrect", "false") else "same"


# ---- object phrases ----------------------------------------------------------------------------------
def plural(name: str) -> str:
    last = name.split()[-1]
    if last.endswith(("s", "x", "ch", "sh")):
        return name + "es"
    return name + "s"


ORDINAL = ["", "second", "third", "fourth", "fifth", "sixth", "seventh"]


def disambiguate(objects, margin_m: float = 0.02) -> tuple[dict[int, str], int]:
    """Objects (with .id, .name, .centre, .size) -> ({id: "the left apple", ...}, number of objects left
    without a phrase because objects of the same name could not be told apart by x, then by z)."""
    groups: dict[str, list] = {}
    for g in objects:
        groups.setdefault(g.name, []).append(g)
    phrases, ambiguous = {}, 0
    for name, gs in groups.items():
        if len(gs) == 1:
            phrases[gs[0].id] = f"the {name}"
            continue
        for axis, words in ((0, ("left", "right", "leftmost", "rightmost", "from the left")),
                            (2, ("nearer", "farther", "nearest", "farthest", "nearest"))):
            order = sorted(gs, key=lambda g: g.centre[axis])
            need = [max(margin_m, 0.25 * min(a.size[axis], b.size[axis])) for a, b in zip(order, order[1:])]
            if all(b.centre[axis] - a.centre[axis] > m for a, b, m in zip(order, order[1:], need)):
                k = len(order)
                for i, g in enumerate(order):
                    if k == 2:
                        phrases[g.id] = f"the {words[i]} {name}"
                    elif i == 0 or i == k - 1:
                        phrases[g.id] = f"the {words[2 if i == 0 else 3]} {name}"
                    else:
                        phrases[g.id] = (f"the {ORDINAL[i]} {name} from the left" if axis == 0
                                         else f"the {ORDINAL[i]} nearest {name}")
                break
        else:
            ambiguous += len(gs)
    return phrases, ambiguous


def clock_hour(dx: float, dz: float) -> int:
    """Clock hour (1..12) of the direction (dx right, dz away); 12 = straight away from the camera,
    3 = right. Rounded to the nearest hour (not floored)."""
    ang = np.degrees(np.arctan2(dx, dz)) % 360
    h = int(np.round(ang / 30)) % 12
    return 12 if h == 0 else h
