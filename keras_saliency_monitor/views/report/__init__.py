"""``keras-saliency-monitor report``: every logged epoch as a GIF, a PNG filmstrip or an HTML page.

TensorBoard shows 10 images per tag unless told otherwise, and nothing leaves TensorBoard. The
report reads the monitor's stored data through ``storage.store`` (the SALIENCY
dashboard's reader: TensorBoard's own multiplexer and data provider, keeping every step),
re-renders each overlay from the stored maps and probe images as the monitor renders its grid,
and writes, by the output file's extension:

- ``.gif``: one frame per logged epoch, the runs side by side, each captioned with run and epoch;
- ``.png``: a filmstrip per run (rows = probes, columns = epochs sampled evenly, first and last
  always kept), runs stacked;
- ``.html``: one self-contained page (every image a ``data:`` URI, no script, no external
  resource): the runs side by side, each with its filmstrip, plots of its ``saliency/`` scalars
  and of the loss and accuracy written by ``keras.callbacks.TensorBoard``, its probes' labels and
  the shortcut alarm when it fired; above them the animation and the runs' curves overlaid.

What a run is: any directory under LOGDIR whose event files hold ``saliency/maps``, named by its
path relative to LOGDIR without the trailing ``saliency``: ``runs/demo/clean/saliency`` ->
``clean``. Loss and accuracy come from the sibling ``train`` and ``validation`` directories when
present. Probe numbers are 0-based, as in the grid, the alarm and the dashboard.

Modules, each importing only the ones before it: ``reading`` (event files -> :class:`Run`,
and the progress bar), ``drawing`` (pure: runs -> uint8 arrays, PNG bytes of plots, HTML text),
``writing`` (:func:`write_report`, atomic). The names below are importable from here.

Example:
    >>> from keras_saliency_monitor.views.report import write_report
    >>> write_report("runs/demo", "demo.html", runs=["clean", "shortcut"], probes=[0, 3])
"""

from keras_saliency_monitor.views.report.drawing import (
    charts_html,
    filmstrip,
    gif_frames,
    html_page,
    sample_columns,
    svg_chart,
    tile_display_size,
)
from keras_saliency_monitor.views.report.reading import (
    Progress,
    ReportError,
    Run,
    find_runs,
    load_runs,
)
from keras_saliency_monitor.views.report.writing import EXTENSIONS, ReportSummary, write_report

__all__ = [
    "EXTENSIONS",
    "Progress",
    "ReportError",
    "Run",
    "ReportSummary",
    "charts_html",
    "filmstrip",
    "find_runs",
    "gif_frames",
    "html_page",
    "load_runs",
    "sample_columns",
    "svg_chart",
    "tile_display_size",
    "write_report",
]
