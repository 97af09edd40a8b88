"""Figures for the library's PNG outputs, without pyplot: a Figure on its own Agg canvas leaves the
caller's matplotlib backend (a notebook's, a GUI's) untouched and keeps no global figure alive."""

from __future__ import annotations


def new_figure(figsize: tuple[float, float]):
    """(figure, axes) on a private Agg canvas; save with fig.savefig, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()
