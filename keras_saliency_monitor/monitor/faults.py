"""Faults during training: a monitor never kills the training it watches.

A fault (non-finite maps, a failing disk, a stalled writer, any exception while computing or
writing) is counted under its kind with where it happened, warned about once per kind and run,
and training goes on; in strict mode it is raised instead, out of ``fit``.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable

__all__ = ["Faults"]


class Faults(dict):
    """kind -> [where, ...]: the faults of the current run, a plain dict to read.

    Args:
        strict: raise each fault instead of warning.
        before_raise: called with ``where`` before a fault is raised in strict mode (Keras skips
            ``on_train_end`` after an exception: the callback releases its writer here). Its own
            errors, and faults recorded while it runs, leave the first error to be raised.
    """

    def __init__(self, strict: bool = False, before_raise: Callable | None = None):
        super().__init__()
        self.strict = strict
        self._before_raise = before_raise
        self._raising = False

    def record(self, kind: str, where, err: BaseException, tb: str | None = None) -> None:
        """Counts a fault; raises ``err`` in strict mode, else warns once per kind and run.

        Args:
            kind: e.g. ``"compute"``, ``"write"``, ``"non_finite"``, ``"stalled"``.
            where: e.g. ``"epoch 3"`` or a write job's name.
            err: the error.
            tb: the formatted traceback when ``err`` was caught on another thread.
        """
        self.setdefault(kind, []).append(where)
        if self.strict:
            if self._before_raise is not None and not self._raising:
                self._raising = True
                try:
                    self._before_raise(where)
                except Exception:  # noqa: BLE001, S110 - the first error is the one raised
                    pass
                finally:
                    self._raising = False
            raise err
        if len(self[kind]) > 1:
            return
        if tb is None and err.__traceback__ is not None:
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        warnings.warn(
            f"SaliencyMonitor: {kind} fault at {where}: {type(err).__name__}: {err}. Training "
            f"goes on; later faults of this kind in this run are only counted in "
            f"`monitor.faults[{kind!r}]` (pass strict=True to raise instead)."
            + (f"\n{tb}" if tb else ""),
            RuntimeWarning,
            stacklevel=3,
        )
