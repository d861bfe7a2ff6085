"""Multi-process training: which process writes the events (the chief).

Every process computes the same numbers (so ``EarlyStopping`` decides the same everywhere); only
one writes. Two set-ups, each with its own rule: ``keras.distribution`` on JAX (process 0) and
``tf.distribute`` (``TF_CONFIG``'s chief, else worker 0).
"""

from __future__ import annotations

import json
import os

import keras

__all__ = ["is_chief", "process_index"]


def process_index(environ=None) -> int:
    """This process's index in a ``keras.distribution`` (JAX) multi-process run, 0 otherwise.

    ``jax.process_index()`` once JAX's distributed runtime is up (``keras.distribution.initialize``
    starts it); before that, ``KERAS_DISTRIBUTION_PROCESS_ID``, the variable
    ``keras.distribution.initialize`` reads. JAX is only asked when it is the active backend
    (importing it is not free, and no other backend runs multi-process through it).
    """
    environ = os.environ if environ is None else environ
    if keras.backend.backend() == "jax":
        import jax

        if jax.process_count() > 1:
            return int(jax.process_index())
    raw = environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "").strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0  # keras.distribution rejects it itself; writing twice loses nothing


def is_chief(environ=None) -> bool:
    """Whether this process writes events.

    Two multi-process set-ups, each with its own rule:

    - ``keras.distribution`` (JAX): process 0 writes (see :func:`process_index`);
    - ``tf.distribute`` (TF_CONFIG): the task of type "chief" (or TF1's "master"); without one in
      the cluster, worker 0. No TF_CONFIG (or one without a task) means single-process
      training, which writes. Evaluators and parameter servers never write.
    """
    if process_index(environ) != 0:
        return False
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "")
    if not raw.strip():
        return True
    try:
        config = json.loads(raw)
        task = config.get("task") or {}
        cluster = config.get("cluster") or {}
        task_type = task.get("type")
        index = int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return True  # TensorFlow itself rejects a malformed TF_CONFIG; writing twice loses nothing
    if not task_type:
        return True
    if task_type in ("chief", "master"):
        return True
    if task_type == "worker":
        return index == 0 and not ("chief" in cluster or "master" in cluster)
    return False
