"""Pure DAG logic on plain data: readiness, cycles, why a task waits, the shape of ``ls --tree``.

The database enforces the same rules with triggers; these functions are the reference the tests
compare it with, and the CLI's formatting helpers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from balsam.states import State

Edge = tuple[int, int]


def parents_map(edges: Iterable[Edge]) -> dict[int, set[int]]:
    """child -> its parents."""
    parents: dict[int, set[int]] = defaultdict(set)
    for parent, child in edges:
        parents[child].add(parent)
    return parents


def children_map(edges: Iterable[Edge]) -> dict[int, set[int]]:
    """parent -> its children."""
    children: dict[int, set[int]] = defaultdict(set)
    for parent, child in edges:
        children[parent].add(child)
    return children


#: Parents that ended without finishing: by default their children fail too.
DEAD: frozenset[State] = frozenset({State.FAILED, State.USER_KILLED})


def blocks(parent: State, allow_failed_parents: bool = False) -> bool:
    """Whether a parent in state ``parent`` keeps its child waiting: until it finishes, or, for a
    child that allows failed parents, until it ends at all (the view ``task_blockers``)."""
    return parent != State.JOB_FINISHED and not (allow_failed_parents and parent in DEAD)


def settle(states: Mapping[int, State], edges: Iterable[Edge],
           allow: Mapping[int, bool] | None = None,
           claimed: Iterable[int] = ()) -> dict[int, State]:
    """The states the triggers of migration 0025 leave, from ``states`` after a change: a waiting
    task that does not allow failed parents and has one fails; a waiting task nothing blocks is
    READY; an unclaimed READY task something blocks waits. Applied until nothing changes."""
    allow = allow or {}
    held = set(claimed)
    parents = parents_map(edges)
    out = dict(states)
    changed = True
    while changed:
        changed = False
        for task in sorted(out):
            mine = parents.get(task, set())
            blocked = any(blocks(out[p], allow.get(task, False)) for p in mine)
            new = out[task]
            if out[task] == State.AWAITING_PARENTS:
                doomed = not allow.get(task, False) and any(out[p] in DEAD for p in mine)
                new = State.FAILED if doomed else new if blocked else State.READY
            elif out[task] == State.READY and blocked and task not in held:
                new = State.AWAITING_PARENTS
            if new != out[task]:
                out[task], changed = new, True
    return out


def find_cycle(edges: Iterable[Edge], parent: int, child: int) -> list[int] | None:
    """The cycle that adding ``parent -> child`` would close, as ``[parent, child, ..., parent]``,
    or None. ``edges`` must form a DAG."""
    if parent == child:
        return [parent, child]
    children = children_map(edges)
    trail = {child: [child]}
    frontier = [child]
    while frontier:
        node = frontier.pop()
        for nxt in sorted(children.get(node, ())):
            if nxt in trail:
                continue
            trail[nxt] = trail[node] + [nxt]
            if nxt == parent:
                return [parent, *trail[nxt]]
            frontier.append(nxt)
    return None


def waiting_reason(unfinished: Sequence[tuple[int, str]], shown: int = 3) -> str:
    """Why a task in AWAITING_PARENTS waits, from its unfinished parents ``(id, state)``.

    Parents that will not finish without help (FAILED, USER_KILLED, RUN_ERROR...) come first.
    """
    if not unfinished:
        return "waiting, yet no parent is unfinished (set it READY)"
    stuck = {State.FAILED, State.USER_KILLED, State.RUN_ERROR, State.RUN_TIMEOUT}
    ordered = sorted(unfinished, key=lambda p: (p[1] not in stuck, p[0]))
    listed = ", ".join(f"{pid} ({state})" for pid, state in ordered[:shown])
    more = f" and {len(ordered) - shown} more" if len(ordered) > shown else ""
    noun = "parent" if len(ordered) == 1 else f"{len(ordered)} parents:"
    return f"waiting for {noun} {listed}{more}"


def forest(ids: Sequence[int], edges: Iterable[Edge]) -> tuple[list[int], dict[int, list[int]]]:
    """Roots and children among ``ids`` (edges leaving the set are ignored), in id order.

    A root is a task none of whose parents is in the set.
    """
    members = set(ids)
    inner = [(p, c) for p, c in edges if p in members and c in members]
    has_parent = {c for _, c in inner}
    roots = [i for i in sorted(members) if i not in has_parent]
    children = {p: sorted(cs) for p, cs in children_map(inner).items()}
    return roots, children
