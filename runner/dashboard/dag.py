"""A run's DAG as SVG, drawn on the server: steps in columns by depth (the longest chain of
``needs`` before them), left to right, each box filled with its state's colour, a mapped step
showing done/total. No JavaScript layout library: the page swaps in the new SVG as the run
moves on."""

from __future__ import annotations

from typing import Any

from markupsafe import escape

COLOURS = {  # fill, text
    "pending": ("#e5e7eb", "#374151"),
    "queued": ("#bfdbfe", "#1e3a8a"),
    "running": ("#fde68a", "#78350f"),
    "success": ("#86efac", "#14532d"),
    "failed": ("#fca5a5", "#7f1d1d"),
    "skipped": ("#f3f4f6", "#6b7280"),
    "cancelled": ("#d1d5db", "#374151"),
}
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 18, 12


def depths(needs: dict[str, list[str]]) -> dict[str, int]:
    """Each step's column: 0 for steps that need nothing, else 1 + the deepest need."""
    found: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in found:
            return found[name]
        if name in seen:  # (validated pipelines have no cycle; never loop on one)
            return 0
        before = [depth(n, seen | {name}) for n in needs.get(name, []) if n in needs]
        found[name] = 1 + max(before) if before else 0
        return found[name]

    for name in needs:
        depth(name)
    return found


def layout(needs: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """step -> (x, y) of its box's top left corner."""
    columns: dict[int, list[str]] = {}
    for name, column in depths(needs).items():
        columns.setdefault(column, []).append(name)
    return {name: (PAD + column * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
            for column, names in columns.items() for row, name in enumerate(names)}


def _label(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"


def render(steps: dict[str, dict[str, Any]], link: str | None = None) -> str:
    """The SVG of ``steps`` (name -> {state, needs, items, done}) ; ``link``: a URL prefix a
    box links to (``#step-`` anchors on the run page)."""
    needs = {name: list(step.get("needs") or []) for name, step in steps.items()}
    where = layout(needs)
    width = max((x for x, _y in where.values()), default=0) + BOX_W + PAD
    height = max((y for _x, y in where.values()), default=0) + BOX_H + PAD
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="steps of the run and what each needs">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
             'fill="#6b7280"/></marker></defs>']
    for name, before in needs.items():
        x2, y2 = where[name]
        for need in before:
            if need not in where:
                continue
            x1, y1 = where[need]
            sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
            mid = (sx + ex) / 2
            parts.append(f'<path class="edge" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, '
                         f'{ex - 2} {ey}" fill="none" stroke="#6b7280" stroke-width="1.5" '
                         f'marker-end="url(#arrow)"/>')
    for name, step in steps.items():
        x, y = where[name]
        state = str(step.get("state") or "pending")
        fill, ink = COLOURS.get(state, COLOURS["pending"])
        detail = state
        if step.get("items") is not None:
            detail += f" {step.get('done') or 0}/{step['items']}"
        box = (f'<g class="step state-{escape(state)}" data-step="{escape(name)}" '
               f'data-state="{escape(state)}"><title>{escape(name)}: {escape(detail)}</title>'
               f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
               f'fill="{fill}" stroke="#374151" stroke-width="1"/>'
               f'<text x="{x + 10}" y="{y + 19}" fill="{ink}" font-size="13" '
               f'font-weight="600">{escape(_label(name))}</text>'
               f'<text x="{x + 10}" y="{y + 36}" fill="{ink}" font-size="12">'
               f'{escape(detail)}</text></g>')
        if link is not None:
            box = f'<a href="{escape(link)}{escape(name)}">{box}</a>'
        parts.append(box)
    parts.append("</svg>")
    return "".join(parts)
