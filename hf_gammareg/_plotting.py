"""Matplotlib plumbing shared by `plot_history` and `plot_sweep`: one clear error without the extra, plain axes.

Figures are built with the object-oriented API (`matplotlib.figure.Figure`), not `pyplot`: no global
figure state to close, and no backend switch that would change a notebook user's interactive backend.
"""

from __future__ import annotations

PLOT_INSTALL = "pip install 'hf_gammareg[plot]'"


def require_matplotlib():
    """``matplotlib``, or an ``ImportError`` whose message names the extra that installs it."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"plotting needs matplotlib, which is not installed: {PLOT_INSTALL}") from exc
    return matplotlib


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure`` with constrained layout."""
    kwargs.setdefault("layout", "constrained")
    return require_matplotlib().figure.Figure(**kwargs)


def plain_y_axis(ax) -> None:
    """Tick labels that are the values themselves.

    matplotlib's default formatter shows a narrow range such as 0.60840–0.60842 as ticks 0–2 plus an
    offset ``1e−5+6.084e−1`` in the corner, which readers misread; ``useOffset=False`` prints 0.60840.
    """
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))


def run_styles(n: int) -> list[dict]:
    """Line properties for ``n`` runs, each run its own: colour (the default cycle, then again dashed,
    dotted…), marker, and a width that shrinks from run to run, so that where runs coincide (a γ no
    policy touches) the earlier ones still show beneath the later ones."""
    colors = require_matplotlib().rcParams["axes.prop_cycle"].by_key().get("color") or ["C0"]
    linestyles, markers = ("-", "--", ":", "-."), ("o", "s", "^", "D", "v", "P", "X")
    return [{"color": colors[i % len(colors)], "linestyle": linestyles[(i // len(colors)) % len(linestyles)],
             "marker": markers[i % len(markers)], "linewidth": max(1.0, 3.0 - 0.8 * i), "markersize": 3.5}
            for i in range(n)]
