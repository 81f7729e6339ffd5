"""Physical audit of a simulated run: where did every item really go?

Independent of the pipeline's own bookkeeping: each ground-truth item's centre crosses each gate
at a time given by the conveyor's kinematics; the emulated firmware's gate timeline says whether
that gate was fully open then (diverted), partly open (a conflict: the servo was moving) or
closed. The first gate that diverts an item decides its bin; none means the default route.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from fovea.line.policy import DEFAULT


@dataclass
class AuditReport:
    n_items: int
    bins: dict[str, int]
    accuracy: float                        # physical bin == intended bin
    wrong_in_lane: dict[str, int]          # items of another class that landed in a lane's bin
    actuated_twice: int                    # items hit by more than one gate swing
    partial_hits: int                      # items that crossed a gate while its servo moved
    items_without_record: int
    items_with_several_records: int
    host_vs_physical_mismatch: int         # host said lane X (DONE) / default, physics disagrees
    records: int
    records_without_truth: int
    records_with_outcome: int
    item_bins: dict[int, str] = field(default_factory=dict, repr=False)
    mismatches: list[tuple[str, str, str]] = field(default_factory=list, repr=False)

    def lines(self) -> list[str]:
        return [f"items {self.n_items}  bins {self.bins}  sorting accuracy {self.accuracy:.4f}",
                f"wrong class in a lane {self.wrong_in_lane}  actuated twice {self.actuated_twice}  "
                f"partial gate hits {self.partial_hits}",
                f"items without a record {self.items_without_record}  with several records "
                f"{self.items_with_several_records}  records {self.records} (no truth: {self.records_without_truth})",
                f"host outcome vs physics mismatches {self.host_vs_physical_mismatch}"]


def audit(conveyor, t0: float, swings, config, finished, only_uids=None) -> AuditReport:
    """Compare physics (conveyor + gate swings) with intent (class -> lane) and the host's outcomes."""
    gate_lane = {g: cls for cls, g in config.lanes.items()}
    gates = sorted(config.gate_distance_mm, key=config.gate_distance_mm.get)
    by_gate = defaultdict(list)
    for s in swings:
        by_gate[s.gate].append(s)
    act = config.actuation_s
    items = [it for it in conveyor.items if only_uids is None or it.uid in only_uids]
    bins: dict[int, str] = {}
    twice = partial = 0
    for it in items:
        hits, where = 0, DEFAULT
        for g in gates:
            tc = t0 + conveyor.crossing_time(it.uid, config.gate_distance_mm[g])
            full = any(s.t_open + act <= tc <= s.t_close for s in by_gate[g])
            part = any(s.t_open <= tc <= s.t_close + act for s in by_gate[g]) and not full
            if full or part:
                hits += 1
            partial += part
            if full:
                where = gate_lane[g]
                break
        twice += hits > 1
        bins[it.uid] = where
    intended = {it.uid: (it.class_name if it.class_name in config.lanes else DEFAULT) for it in items}
    correct = sum(bins[u] == intended[u] for u in bins)
    wrong = Counter(bins[u] for u in bins if bins[u] != DEFAULT and bins[u] != intended[u])
    recs_of_item = Counter()
    mism: list[tuple[str, str, str]] = []
    no_truth = with_outcome = 0
    for r in finished:
        with_outcome += r.lane is not None
        if not r.truth:
            no_truth += 1
            continue
        for u in r.truth:
            recs_of_item[u] += 1
        main = max(r.truth, key=r.truth.get)
        if main in bins and bins[main] != r.lane:
            mism.append((r.rid, r.lane, bins[main]))
    return AuditReport(
        n_items=len(items), bins=dict(Counter(bins.values())), accuracy=correct / max(len(items), 1),
        wrong_in_lane=dict(wrong), actuated_twice=twice, partial_hits=partial,
        items_without_record=sum(1 for u in bins if recs_of_item[u] == 0),
        items_with_several_records=sum(1 for u in bins if recs_of_item[u] > 1),
        host_vs_physical_mismatch=len(mism), records=len(finished), records_without_truth=no_truth,
        records_with_outcome=with_outcome, item_bins=bins, mismatches=mism)
