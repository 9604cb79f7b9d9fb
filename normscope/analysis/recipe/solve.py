"""The multiple-choice knapsack behind `recipe`: one option (bytes, error) per item, least total error
within a byte capacity.

An exact dynamic program over the bytes above each item's cheapest option, counted in units of
`unit` bytes with every option's extra cost rounded *up* to a whole unit (so its answer always fits):
with at most `MAX_BUCKETS` units of slack the unit is 1 byte and the answer is optimal; for a real model
the unit is a few KiB and the answer is optimal for the rounded costs. Beside it, a greedy on the lower
convex hull of each item's options (the Lagrangian relaxation: take upgrades in order of error saved
per byte while they fit) and any feasible seed (e.g. a llama.cpp plan) are polished with single
upgrades and exchanges (one item down to pay for another's upgrade); the best answer is kept, so it is
never worse than a feasible seed.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["solve"]

Option = tuple[int, float]  # (bytes, error)
MAX_BUCKETS = 1 << 16  # units of slack in the dynamic program
MAX_CELLS = 1 << 25  # items × buckets of the choice table (one byte each)


def _hull(options: Sequence[Option]) -> list[int]:
    """Indices of the lower convex hull of (bytes, error), by increasing bytes and decreasing error."""
    order = sorted(range(len(options)), key=lambda i: (options[i][0], options[i][1]))
    pareto: list[int] = []
    for i in order:  # drop options that cost more and save nothing
        if not pareto or options[i][1] < options[pareto[-1]][1]:
            if pareto and options[i][0] == options[pareto[-1]][0]:
                pareto[-1] = i
            else:
                pareto.append(i)
    hull: list[int] = []
    for i in pareto:
        while len(hull) >= 2:
            (b1, e1), (b2, e2), (b3, e3) = options[hull[-2]], options[hull[-1]], options[i]
            # keep the middle point only if it saves more per byte than the chord to the new point
            if (e1 - e2) * (b3 - b1) <= (e1 - e3) * (b2 - b1):
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _greedy(options: Sequence[Sequence[Option]], capacity: int) -> list[int] | None:
    hulls = [_hull(o) for o in options]
    pick = [h[0] for h in hulls]
    used = sum(options[i][p][0] for i, p in enumerate(pick))
    if used > capacity:
        return None
    pos = [0] * len(options)
    heap: list[tuple[float, int]] = []

    def push(i: int) -> None:
        if pos[i] + 1 < len(hulls[i]):
            (b0, e0), (b1, e1) = options[i][hulls[i][pos[i]]], options[i][hulls[i][pos[i] + 1]]
            heapq.heappush(heap, (-(e0 - e1) / max(b1 - b0, 1), i))

    for i in range(len(options)):
        push(i)
    while heap:
        _, i = heapq.heappop(heap)
        nxt = hulls[i][pos[i] + 1]
        extra = options[i][nxt][0] - options[i][pick[i]][0]
        if used + extra <= capacity:
            used += extra
            pick[i], pos[i] = nxt, pos[i] + 1
            push(i)
    return pick


def _improve(options: Sequence[Sequence[Option]], capacity: int, pick: list[int], rounds: int = 200) -> list[int]:
    """Single upgrades that fit, then exchanges (one item down, another up) that lower the total error."""
    pick = list(pick)
    used = sum(options[i][p][0] for i, p in enumerate(pick))
    for _ in range(rounds):
        slack = capacity - used
        best, move = 0.0, None
        for i, opts in enumerate(options):  # single upgrades within the slack
            b0, e0 = opts[pick[i]]
            for k, (b, e) in enumerate(opts):
                if e < e0 and b - b0 <= slack and e0 - e > best:
                    best, move = e0 - e, ((i, k),)
        if move is None:  # exchanges: free bytes on one item to pay for another's upgrade
            downs = [(opts[k][0] - opts[pick[i]][0], opts[k][1] - opts[pick[i]][1], i, k)
                     for i, opts in enumerate(options) for k in range(len(opts)) if opts[k][0] < opts[pick[i]][0]]
            ups = [(opts[k][0] - opts[pick[i]][0], opts[pick[i]][1] - opts[k][1], i, k)
                   for i, opts in enumerate(options) for k in range(len(opts))
                   if opts[k][0] > opts[pick[i]][0] and opts[k][1] < opts[pick[i]][1]]
            for db_up, saved, i, k in ups:
                for db_down, lost, j, m in downs:
                    if j != i and db_up + db_down <= slack and saved - lost > best:
                        best, move = saved - lost, ((i, k), (j, m))
        if move is None:
            break
        for i, k in move:
            used += options[i][k][0] - options[i][pick[i]][0]
            pick[i] = k
    return pick


def _dynamic(options: Sequence[Sequence[Option]], capacity: int) -> list[int] | None:
    """Exact multiple-choice knapsack on extra costs rounded up to `unit` bytes (None: nothing fits)."""
    base = [min(range(len(o)), key=lambda k: (o[k][0], o[k][1])) for o in options]
    slack = capacity - sum(o[b][0] for o, b in zip(options, base))
    if slack < 0 or not options:
        return None
    buckets = max(1, min(MAX_BUCKETS, MAX_CELLS // len(options)))
    unit = max(1, math.ceil(slack / buckets))
    width = slack // unit + 1  # extra-cost buckets 0 .. slack // unit
    best = np.zeros(width)  # least total error of the items so far, extra cost ≤ w units
    choice = np.zeros((len(options), width), dtype=np.int16)
    for i, opts in enumerate(options):
        cheapest = opts[base[i]][0]
        new = np.full(width, np.inf)
        for k, (b, e) in enumerate(opts):
            c = math.ceil((b - cheapest) / unit)
            if c >= width or not math.isfinite(e):
                continue
            cand = best[:width - c] + e
            better = cand < new[c:]
            new[c:][better] = cand[better]
            choice[i, c:][better] = k
        best = new
    if not math.isfinite(best[-1]):
        return None
    pick, w = [0] * len(options), width - 1
    for i in range(len(options) - 1, -1, -1):
        k = int(choice[i, w])
        pick[i] = k
        w -= math.ceil((options[i][k][0] - options[i][base[i]][0]) / unit)
    return pick


def _total(options: Sequence[Sequence[Option]], pick: Sequence[int]) -> float:
    return sum(options[i][p][1] for i, p in enumerate(pick))


def solve(options: Sequence[Sequence[Option]], capacity: int, seeds: Sequence[Sequence[int]] = ()) -> list[int]:
    """The chosen option index per item, total bytes ≤ `capacity`, total error as small as found.

    Raises:
        ValueError: even the smallest option of every item does not fit.

    Example:
        >>> solve([[(1, 10.0), (2, 1.0)], [(1, 5.0), (2, 4.0)]], capacity=3)
        [1, 0]
    """
    starts = []
    greedy = _greedy(options, capacity)
    if greedy is None:
        raise ValueError("the smallest options do not fit the capacity")
    starts.append(greedy)
    exact = _dynamic(options, capacity)
    if exact is not None:
        starts.append(exact)
    for seed in seeds:
        if sum(options[i][p][0] for i, p in enumerate(seed)) <= capacity:
            starts.append(list(seed))
    results = [_improve(options, capacity, s) for s in starts]
    return min(results, key=lambda p: _total(options, p))
