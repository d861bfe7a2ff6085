"""A cheap look at a log directory, before anything heavy is imported.

``SaliencyMonitor(log_dir)`` writes its event files to ``<log_dir>/saliency``; the command line uses
:func:`has_saliency_events` to warn when ``tensorboard`` is pointed at a tree without any, and to
import TensorFlow (which the event reader pulls in) only when ``report`` has something to read.
Names and directories only: no file is opened (``report`` checks the contents itself).
"""

from __future__ import annotations

import os

SALIENCY_DIR = "saliency"  # the callback's sub-directory of its log_dir


def is_event_file(name: str) -> bool:
    """Whether ``name`` is an event file's name (TensorBoard's ``*tfevents*``, not a temp file)."""
    return "tfevents" in name and not name.endswith((".tmp", ".lock"))


def has_saliency_events(logdir) -> bool:
    """Whether an event file lies in a directory named ``saliency`` under ``logdir`` (included).

    Args:
        logdir: a directory, searched recursively; ``logdir`` itself counts when it is the
            ``saliency`` directory.

    Returns:
        True at the first such file; False when there is none, or ``logdir`` is not a directory.
    """
    logdir = os.path.abspath(os.fspath(logdir))
    for dirpath, _, filenames in os.walk(logdir):
        if os.path.basename(dirpath) == SALIENCY_DIR and any(map(is_event_file, filenames)):
            return True
    return False
