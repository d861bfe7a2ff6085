"""What a logged epoch writes: rendered, encoded and written on the background worker.

At step ``s`` under ``<log_dir>/saliency``: the numbers (scalars ``saliency/<name>`` and
per-probe histograms); at a fit's first logged step the probes' table (``saliency/probes_info``)
and the dashboard's probe set (``saliency/probe_set``); the alarm's text when it fires; the
dashboard's quantised maps (``saliency/maps``); the labelled grid of overlays
(``saliency/overlays``); with ``save_arrays``, the raw maps in an ``.npz`` file.
"""

from __future__ import annotations

import hashlib

import numpy as np

from keras_saliency_monitor.drawing import render
from keras_saliency_monitor.storage import arrays, store

__all__ = ["CHANCE", "GRID_TAG", "INFO_TAG", "EpochLog"]

GRID_TAG = "saliency/overlays"  # one labelled grid per logged epoch (Images dashboard)
INFO_TAG = "saliency/probes_info"  # text: which probes, their labels (first logged step)
# Chance level of the logged numbers (docs/guides/alarm.md, "The numbers").
CHANCE = {
    "focus_lift": 1.0,
    "border_ratio": 1.0,
    "place_agreement": 1.0,
    "probe_skill": 0.0,
    "object_reliance": 0.0,
}
# Grid layout, chosen with screenshots of TensorBoard's Images dashboard (350 px wide cards):
# two probes per row, tiles of at most 112 px, captions about 15 px tall on screen.
GRID_COLUMNS = 2
GRID_TILE = 112


class EpochLog:
    """The logged epochs of one monitor, with its probes' display prepared once.

    Built in ``SaliencyMonitor.__init__`` from its arguments (``arrays_dir``: its ``log_dir``
    with ``save_arrays``, else None): rendering the probe images there checks ``display_fn``,
    ``cmap`` and ``clip_percentile`` before training, not at the first epoch's end.
    """

    def __init__(
        self, probes, explainer, alarm, class_names, render_options, max_grid_width, arrays_dir
    ):
        self.probes, self.explainer, self.alarm = probes, explainer, alarm
        self.class_names, self.render_options = class_names, render_options
        self.max_grid_width, self.arrays_dir = max_grid_width, arrays_dir
        self.probe_set_written = False  # this fit's probe set (see reset)
        # The probes at full size for the dashboard's probe set; at the grid's tile size (at
        # most GRID_TILE px a side), and dimmed to grey: what the heat is drawn over.
        zeros = np.zeros(probes.x.shape[:3], np.float32)
        self.display, _ = render.render_overlays(probes.x, zeros, **render_options)
        self.grid_factor = render.tile_factor(self.display.shape[1:3], GRID_TILE)
        self.grid_display = render.downscale_images(self.display, self.grid_factor)
        self.backdrop = render.dim_grey(self.grid_display)
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        """What identifies the probe set: the probes, their labels, masks, look and names, and the
        method. Stored with the probe set and with every epoch's maps, so that a reader of a log
        dir reused with other probes draws each epoch with its own (``store.group_epochs``)."""
        p = self.probes
        digest = hashlib.blake2b(digest_size=12)
        for part in (p.indices, p.x, p.labels, p.masks, self.display):
            if part is not None:
                part = np.ascontiguousarray(part)
                digest.update(f"{part.dtype.str}{part.shape}".encode())
                digest.update(part.tobytes())
            digest.update(b"|")
        digest.update(repr((self.class_names, self.explainer.method.name)).encode())
        return digest.hexdigest()

    def reset(self):
        """A new fit: its event file gets the probe set again, at its first logged step."""
        self.probe_set_written = False

    def write(self, writer, step, explanation, numbers, per_probe, message, broken):
        """Render, encode and write one epoch at ``step``.

        The numbers go first, so a failure while rendering still leaves them logged; then the
        dashboard's data (the probe set at a fit's first logged step, the quantised maps), then
        the grid; the flush at the end hands everything to the operating system (and the disk)
        before the job counts as done.
        """
        w = writer
        try:
            for key, value in numbers.items():
                if key.startswith("saliency_sanity_") and not np.isfinite(value):
                    continue  # measured once a fit: its point, not a NaN at every other epoch
                w.add_scalar("saliency/" + key[len("saliency_") :], value, step)
            for key, values in per_probe.items():
                finite = values[np.isfinite(values)]
                if finite.size:
                    w.add_histogram(f"saliency/{key}_per_probe", finite, step)
            if not self.probe_set_written:
                w.add_text(INFO_TAG, self.info_table(), step)
                w.add_blob_sequence(store.PROBE_SET_TAG, self._probe_set(), step, store.PLUGIN_NAME)
                self.probe_set_written = True
            if message is not None:
                w.add_text(store.ALARM_TAG, message, step)
            maps = explanation.maps
            flat = render.flat_maps(maps) & ~broken
            # One downsampling serves both the stored maps and the grid's tiles.
            small = store.downsample_maps(maps, GRID_TILE)
            regression = self.explainer.head.num_classes is None
            blobs = store.encode_maps(
                small,
                step=step,
                classes=explanation.classes,
                confidences=explanation.confidences,
                outputs=explanation.logits[:, 0] if regression else None,
                flat=flat,
                non_finite=broken,
                per_probe=per_probe,
                max_side=GRID_TILE,
                extra={"probe_set": self.fingerprint},  # the probe set these maps belong to
            )
            w.add_blob_sequence(store.MAPS_TAG, blobs, step, store.PLUGIN_NAME)
            o = self.render_options
            overlays = render.heat_overlays(  # non-finite maps come out all zero
                self.backdrop,
                small,
                clip_percentile=o["clip_percentile"],
                sigma=o["sigma"] / self.grid_factor,
                cmap=o["cmap"],
                alpha=o["alpha"],
            )
            overlays = render.mark_tiles(overlays, flat, broken)
            grid = render.make_grid(
                self.grid_display,
                overlays,
                self.captions(explanation, broken, flat, regression),
                max_width=self.max_grid_width,
                columns=GRID_COLUMNS,
                display_width=render.TENSORBOARD_CARD_WIDTH,
            )
            # As tf.summary.image writes it, but JPEG: a fifth of the PNG's bytes, 1/15 the time.
            w.add_blob_sequence(GRID_TAG, store.image_blobs(grid), step, "images")
            if self.arrays_dir is not None:  # with confidences and labels when there are some
                e, p = explanation, self.probes
                extra = dict(classes=e.classes, logits=e.logits, indices=p.indices)
                extra.update(confidences=e.confidences, labels=p.labels)
                extra = {k: v for k, v in extra.items() if v is not None}
                arrays.save_epoch(self.arrays_dir, step, e.maps, **extra)
        finally:
            w.flush()

    def _probe_set(self):
        """The ``saliency/probe_set`` blobs: probes, labels, display images and masks."""
        probes, o, a = self.probes, self.render_options, self.alarm
        thresholds = {
            "focus_lift": a.lift_threshold,
            "border_ratio": a.border_threshold,
            "object_reliance": a.reliance_threshold,
            "shortcut": 1.0,  # the alarm's own score: above 1.0 some signal is past its threshold
            "probe_skill": a.min_skill,
        }
        return store.encode_probe_set(
            self.display,
            indices=probes.indices,
            labels=probes.labels,
            class_names=self.class_names,
            masks=probes.masks,
            method=self.explainer.method.name,
            regression=self.explainer.head.num_classes is None,
            # Added to the contract: how the monitor renders, so readers start from the same.
            extra={
                "fingerprint": self.fingerprint,  # named by every epoch's maps
                "render": {
                    "clip_percentile": float(o["clip_percentile"]),
                    "smoothing": float(o["sigma"]),
                    "cmap": getattr(o["cmap"], "name", str(o["cmap"])),
                    "alpha": float(o["alpha"]),
                },
                # Reference lines of the dashboard's charts, per `saliency/<name>` number: the
                # alarm's signals that are switched on.
                "chance": dict(CHANCE),
                "thresholds": {k: float(v) for k, v in thresholds.items() if v is not None},
            },
        )

    def class_name(self, c) -> str:
        c, names = int(c), self.class_names or ()
        return names[c] if 0 <= c < len(names) else str(c)

    def label_names(self):
        """The probes' true labels as names, or None without labels."""
        labels = self.probes.labels
        return None if labels is None else [self.class_name(c) for c in labels]

    def info_table(self) -> str:
        """Markdown table of the probes (numbered from 0), for TensorBoard's text dashboard."""
        rows = ["| probe | index in probe_data | label |", "|---|---|---|"]
        names = self.label_names() or [""] * len(self.probes.indices)
        for k, (i, label) in enumerate(zip(self.probes.indices, names)):
            rows.append(f"| {k} | {int(i)} | {label} |")
        return "\n".join(rows)

    def captions(self, explanation, broken, flat, regression) -> list[str]:
        """One short caption per probe: number (0-based) and true label; the explained class
        and its probability (or the output); a mark for a broken or flat map."""
        conf = explanation.confidences
        names = self.label_names()
        captions = []
        for i, c in enumerate(explanation.classes):
            first = f"#{i}" if names is None else f"#{i} true {names[i]}"
            if regression:
                second = f"out {explanation.logits[i, 0]:.3g}"
            else:
                conf_text = "" if conf is None else f" {conf[i]:.2f}"
                second = f"pred {self.class_name(c)}{conf_text}"
            lines = [first, second]
            if broken[i]:
                lines.append("NON-FINITE MAP")
            elif flat[i]:
                lines.append("FLAT MAP")
            captions.append("\n".join(lines))
        return captions
