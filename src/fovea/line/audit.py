"""Physical audit of a simulated run: where did every item really go?

Independent of the pipeline's own bookkeeping: each ground-truth item's centre crosses each gate
at a time given by the conveyor's kinematics; the emulated firmware's gate timeline says whether
that gate was fully open then (diverted), partly open (a conflict: the servo was moving) or
closed. The first gate that diverts an item decides its bin; none means the default route.

Counts the line's promise is judged by: wrong lane, partial gate hits, items hit by more than
one swing, items with two logged outcomes, logged outcome != physical bin (unless the host
flagged it `unknown`), and unseen items (no record) against the blind intervals the log reports.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fovea.line.policy import DEFAULT


UNKNOWN = "unknown"       # the host's outcome when it cannot know where an item went (flagged)


@dataclass
class AuditReport:
    n_items: int
    bins: dict[str, int]
    accuracy: float                        # physical bin == intended bin
    wrong_in_lane: dict[str, int]          # items of another class that landed in a lane's bin
    actuated_twice: int                    # items hit (fully or partly) by more than one gate swing
    partial_hits: int                      # item crossings of a gate while its servo moved
    items_without_record: int              # truly unseen items (no record holds them)
    items_with_several_records: int
    host_vs_physical_mismatch: int         # logged lane / default != physical bin, not flagged unknown
    records: int
    records_without_truth: int
    records_with_outcome: int
    items_with_two_outcomes: int = 0       # >= 2 outcomes logged for one item (several records or events)
    items_with_conflicting_outcomes: int = 0   # ... and they disagree (e.g. a lane and the default)
    flagged_unknown: int = 0               # records whose logged outcome is `unknown` (host says it cannot know)
    unrecorded_in_lane: int = 0            # unseen items that still fell into a lane bin (nobody logged it)
    unseen_in_blind_interval: int = 0      # unseen items whose time in view overlaps a logged blind interval
    unseen_in_merged_record: int = 0       # unseen items pressed into a touching neighbour's merged blob
    unseen_uncounted: int = 0              # unseen items outside every logged blind interval and merged blob
    unseen_estimated: float = float("nan")  # the log's own estimate of items that passed unseen (if any)
    item_bins: dict[int, str] = field(default_factory=dict, repr=False)
    mismatches: list[tuple[str, str, str]] = field(default_factory=list, repr=False)
    two_outcome_items: list[int] = field(default_factory=list, repr=False)
    twice_actuated_items: list[int] = field(default_factory=list, repr=False)
    partial_hit_items: list[int] = field(default_factory=list, repr=False)
    unseen_items: list[int] = field(default_factory=list, repr=False)

    def lines(self) -> list[str]:
        return [f"items {self.n_items}  bins {self.bins}  sorting accuracy {self.accuracy:.4f}",
                f"wrong class in a lane {self.wrong_in_lane}  actuated twice {self.actuated_twice}  "
                f"partial gate hits {self.partial_hits}",
                f"items without a record {self.items_without_record} (in a blind interval "
                f"{self.unseen_in_blind_interval}, uncounted {self.unseen_uncounted}, log estimate "
                f"{self.unseen_estimated:.1f}, in a lane {self.unrecorded_in_lane})  with several records "
                f"{self.items_with_several_records}  records {self.records} (no truth: {self.records_without_truth})",
                f"items with two outcomes {self.items_with_two_outcomes} (conflicting "
                f"{self.items_with_conflicting_outcomes})  host outcome vs physics mismatches "
                f"{self.host_vs_physical_mismatch} (flagged unknown: {self.flagged_unknown})"]


def is_unknown(lane: str | None, reason: str = "") -> bool:
    """True for an outcome the host flagged as not knowing the item's bin."""
    return lane == UNKNOWN or (lane is not None and lane.startswith(UNKNOWN)) or str(reason).startswith(UNKNOWN)


def _gate_hits(conveyor, uid: int, t0: float, gates, by_gate, config, gate_lane):
    """(bin, swings hitting the item, partial crossings) for one item passing the gates in order."""
    act = config.actuation_s
    hits = partial = 0
    where = DEFAULT
    for g in gates:
        tc = t0 + conveyor.crossing_time(uid, config.gate_distance_mm[g])
        full = [s for s in by_gate[g] if s.t_open + act <= tc <= s.t_close]
        part = [s for s in by_gate[g] if s.t_open <= tc <= s.t_close + act and s not in full]
        hits += len(full) + len(part)
        partial += bool(part) and not full
        if full:
            where = gate_lane[g]
            break
    return where, hits, partial


def _unseen_windows(events) -> tuple[list[tuple[float, float]], float]:
    """Blind intervals [(t_from, t_to)] logged by the runner and the summed unseen-item estimate."""
    wins, est, any_est = [], 0.0, False
    for e in events or ():
        if e.get("type") == "fault" and e.get("kind") == "blind_interval":
            wins.append((float(e["t_from"]), float(e["t_to"])))
            for key in ("unseen_est", "est_unseen", "unseen_items", "n_unseen"):
                if key in e:
                    est += float(e[key])
                    any_est = True
                    break
    return wins, (est if any_est else float("nan"))


def _in_merged_record(conveyor, unseen, finished) -> set[int]:
    """Unseen items whose chain of touching neighbours is held by a record flagged merged/not_single:
    the camera saw them, as part of one blob that the host routed as ambiguous."""
    items = conveyor.items
    group = {}
    g = -1
    for it in items:
        if not it.touching_prev:
            g += 1
        group[it.uid] = g
    merged_groups = {group[u] for r in finished if set(r.flags) & {"merged", "not_single"}
                     for u in r.truth if u in group}
    return {u for u in unseen if group.get(u) in merged_groups}


def audit(conveyor, t0: float, swings, config, finished, only_uids=None, events=None) -> AuditReport:
    """Compare physics (conveyor + gate swings) with intent (class -> lane) and the host's outcomes.

    `events` (the run's event log, optional) adds what only the log holds: outcome events per
    record (a record finalized twice) and the blind intervals that account for unseen items.
    """
    gate_lane = {g: cls for cls, g in config.lanes.items()}
    gates = sorted(config.gate_distance_mm, key=config.gate_distance_mm.get)
    by_gate = defaultdict(list)
    for s in swings:
        by_gate[s.gate].append(s)
    items = [it for it in conveyor.items if only_uids is None or it.uid in only_uids]
    bins: dict[int, str] = {}
    twice_items, partial_items = [], []
    partial = 0
    for it in items:
        where, hits, part = _gate_hits(conveyor, it.uid, t0, gates, by_gate, config, gate_lane)
        if hits > 1:
            twice_items.append(it.uid)
        if part:
            partial_items.append(it.uid)
        partial += part
        bins[it.uid] = where
    intended = {it.uid: (it.class_name if it.class_name in config.lanes else DEFAULT) for it in items}
    correct = sum(bins[u] == intended[u] for u in bins)
    wrong = Counter(bins[u] for u in bins if bins[u] != DEFAULT and bins[u] != intended[u])
    n_outcome_events = Counter(e["record"] for e in events or () if e.get("type") == "outcome")
    recs_of_item = Counter()
    outcomes_of_item: dict[int, list[str]] = defaultdict(list)
    mism: list[tuple[str, str, str]] = []
    no_truth = with_outcome = unknown = 0
    for r in finished:
        with_outcome += r.lane is not None
        if not r.truth:
            no_truth += 1
            continue
        for u in r.truth:
            recs_of_item[u] += 1
        main = max(r.truth, key=r.truth.get)
        if r.lane is not None:
            outcomes_of_item[main].extend([r.lane] * max(n_outcome_events.get(r.rid, 1), 1))
        if is_unknown(r.lane, r.reason):
            unknown += 1
        elif main in bins and bins[main] != r.lane:
            mism.append((r.rid, r.lane, bins[main]))
    two = sorted(u for u, ls in outcomes_of_item.items() if len(ls) > 1 and u in bins)
    conflicting = sum(1 for u in two if len(set(outcomes_of_item[u])) > 1)
    unseen = [u for u in bins if recs_of_item[u] == 0]
    wins, est = _unseen_windows(events)
    view = conveyor.config.view_mm
    in_merged = _in_merged_record(conveyor, unseen, finished)
    covered = 0
    for u in unseen:
        if u in in_merged:
            continue
        half = conveyor.items[u].half_len_mm
        t_in = t0 + conveyor.crossing_time(u, -half)
        t_out = t0 + conveyor.crossing_time(u, view + half)
        covered += any(a <= t_out and t_in <= b for a, b in wins)
    return AuditReport(
        n_items=len(items), bins=dict(Counter(bins.values())), accuracy=correct / max(len(items), 1),
        wrong_in_lane=dict(wrong), actuated_twice=len(twice_items), partial_hits=partial,
        items_without_record=len(unseen),
        items_with_several_records=sum(1 for u in bins if recs_of_item[u] > 1),
        host_vs_physical_mismatch=len(mism), records=len(finished), records_without_truth=no_truth,
        records_with_outcome=with_outcome, items_with_two_outcomes=len(two),
        items_with_conflicting_outcomes=conflicting, flagged_unknown=unknown,
        unrecorded_in_lane=sum(1 for u in unseen if bins[u] != DEFAULT),
        unseen_in_blind_interval=covered if events is not None else 0, unseen_in_merged_record=len(in_merged),
        unseen_uncounted=len(unseen) - len(in_merged) - (covered if events is not None else 0),
        unseen_estimated=est, item_bins=bins, mismatches=mism, two_outcome_items=two,
        twice_actuated_items=twice_items, partial_hit_items=partial_items, unseen_items=unseen)
