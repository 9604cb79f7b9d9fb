"""Per-tensor numbers arranged as a layers × kinds grid, the shape a heatmap draws. Nothing is computed:
each cell holds one number of one tensor's report, or None where no tensor is."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...results import Component, Role, TensorReport
from ..fmt import num
from ..tables import Table

__all__ = ["Grid", "layer_grid", "role_kind"]

_ROLE_ORDER = {role: i for i, role in enumerate(Role)}
_COMPONENT_ORDER = {c: i for i, c in enumerate(Component)}


@dataclass(frozen=True)
class Grid:
    rows: tuple[int, ...]  # layer indices, ascending
    cols: tuple[str, ...]  # kinds, by component then Role order
    values: tuple[tuple[float | None, ...], ...]  # values[row][col]
    tensors: tuple[tuple[str | None, ...], ...]  # the tensor each cell shows

    def by_column(self) -> list[list[float | None]]:
        """values[col][row]: kinds down, layers across (how the heatmaps draw it)."""
        return [list(col) for col in zip(*self.values)]

    def value(self, layer: int, kind: str) -> float | None:
        return self.values[self.rows.index(layer)][self.cols.index(kind)]

    def table(self, title: str, fmt: Callable[[float], str] = num) -> Table:
        """The grid as a table, one row per layer (the numbers behind a heatmap)."""
        rows = tuple((str(layer), *(("—" if v is None else fmt(v)) for v in vals))
                     for layer, vals in zip(self.rows, self.values))
        return Table(title, ("layer", *self.cols), rows, "l" + "r" * len(self.cols))


def role_kind(t: TensorReport) -> str:
    """The column a tensor goes to: its role (without `norm_`), prefixed by the component when not text."""
    kind = t.role.value.removeprefix("norm_")
    component = getattr(t, "component", Component.TEXT)  # simulate's tensors are text-model tensors
    return kind if component is Component.TEXT else f"{component.value}:{kind}"


def _name_kind(t: TensorReport) -> str:
    # the name after its layer index: "model.layers.3.self_attn.q_norm.weight" -> "self_attn.q_norm"
    tail = t.name.split(f".{t.layer}.", 1)[-1].removesuffix(".weight")
    component = getattr(t, "component", Component.TEXT)
    return tail if component is Component.TEXT else f"{component.value}:{tail}"


def layer_grid(tensors: Iterable[TensorReport], value: Callable[[TensorReport], float | None],
               kind: Callable[[TensorReport], str] = role_kind) -> Grid:
    """Tensors with a layer index, as a grid of `value(tensor)`.

    Tensors that would share a cell (two norms with the same role in one layer, e.g. unknown names read
    as `norm_other`) each get a column of their own, named after the tensor.
    """
    placed = [t for t in tensors if t.layer is not None]
    by_cell: dict[tuple[int, str], list[TensorReport]] = defaultdict(list)
    for t in placed:
        by_cell[(t.layer, kind(t))].append(t)
    crowded = {k for (_, k), ts in by_cell.items() if len(ts) > 1}
    cells: dict[tuple[int, str], TensorReport] = {}
    order: dict[str, tuple[int, int, str]] = {}
    for t in placed:
        col = _name_kind(t) if kind(t) in crowded else kind(t)
        cells[(t.layer, col)] = t
        order.setdefault(col, (_COMPONENT_ORDER[getattr(t, "component", Component.TEXT)], _ROLE_ORDER[t.role], col))
    rows = tuple(sorted({layer for layer, _ in cells}))
    cols = tuple(sorted(order, key=order.__getitem__))
    return Grid(rows, cols,
                tuple(tuple(value(cells[(r, c)]) if (r, c) in cells else None for c in cols) for r in rows),
                tuple(tuple(cells[(r, c)].name if (r, c) in cells else None for c in cols) for r in rows))
