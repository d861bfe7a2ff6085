"""Tests for storage.writer: event files read back with TensorBoard's own reader."""

import io
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.compat.proto import summary_pb2, types_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c as reference_crc32c
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.util import tensor_util

from keras_saliency_monitor.storage import writer as writer_module
from keras_saliency_monitor.storage.writer import BackgroundWorker, EventWriter, JobError

WRITER_PY = os.path.abspath(writer_module.__file__)


def _read(logdir):
    acc = pea.EventAccumulator(str(logdir), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    return acc


def _decode_png(png_bytes):
    return np.asarray(Image.open(io.BytesIO(png_bytes)))


# --------------------------------------------------------------------------------------------------
# EventWriter
# --------------------------------------------------------------------------------------------------


def test_round_trip_through_tensorboard_reader(tmp_path):
    rng = np.random.default_rng(0)
    # (k, H, W, 3) with H != W, so a swapped width/height would show. Random pixels make ~37 kB
    # events (TensorFlow's reader drops records whose CRC is wrong).
    batches = [rng.integers(0, 256, size=(4, 48, 64, 3), dtype=np.uint8) for _ in range(3)]
    values = [rng.normal(size=(7, 11)) for _ in range(3)]
    with EventWriter(tmp_path) as writer:
        for step in range(3):
            writer.add_images("saliency/overlays", batches[step], step, description="probe grid")
            writer.add_scalar("saliency/focus", 0.25 * step, step)
            writer.add_text("saliency/notes", f"epoch **{step}**", step)
            writer.add_histogram("saliency/values", values[step], step)

    acc = _read(tmp_path)

    images = acc.Tensors("saliency/overlays")
    assert [e.step for e in images] == [0, 1, 2]
    for event, batch in zip(images, batches, strict=True):
        assert event.wall_time > 1e9
        assert event.tensor_proto.dtype == types_pb2.DT_STRING
        strings = tensor_util.make_ndarray(event.tensor_proto)
        assert strings.shape == (2 + 4,)
        assert strings[0] == b"64" and strings[1] == b"48"  # width, then height
        for png, expected in zip(strings[2:], batch, strict=True):
            np.testing.assert_array_equal(_decode_png(png), expected)

    scalars = acc.Tensors("saliency/focus")
    assert [e.step for e in scalars] == [0, 1, 2]
    for event, step in zip(scalars, range(3), strict=True):
        value = tensor_util.make_ndarray(event.tensor_proto)
        assert value.shape == () and value.dtype == np.float32
        assert value == np.float32(0.25 * step)

    texts = acc.Tensors("saliency/notes")
    assert [e.step for e in texts] == [0, 1, 2]
    assert [tensor_util.make_ndarray(e.tensor_proto).item() for e in texts] == [
        f"epoch **{step}**".encode() for step in range(3)
    ]

    histograms = acc.Tensors("saliency/values")
    assert [e.step for e in histograms] == [0, 1, 2]
    for event in histograms:
        buckets = tensor_util.make_ndarray(event.tensor_proto)
        assert buckets.shape == (30, 3) and buckets.dtype == np.float64
        assert buckets[:, 2].sum() == 7 * 11

    expected_plugins = {
        "saliency/overlays": ("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
        "saliency/focus": ("scalars", summary_pb2.DATA_CLASS_SCALAR),
        "saliency/notes": ("text", summary_pb2.DATA_CLASS_TENSOR),
        "saliency/values": ("histograms", summary_pb2.DATA_CLASS_TENSOR),
    }
    for tag, (plugin, data_class) in expected_plugins.items():
        metadata = acc.SummaryMetadata(tag)
        assert metadata.plugin_data.plugin_name == plugin
        assert metadata.data_class == data_class  # what TensorBoard's data provider serves by
    assert acc.SummaryMetadata("saliency/overlays").summary_description == "probe grid"


def test_blob_sequence_round_trip_through_tensorboard_reader(tmp_path):
    blobs = [b'{"a": 1}', bytes(range(256)) * 300, b""]  # ~77 kB
    with EventWriter(tmp_path) as writer:
        writer.add_blob_sequence("saliency/maps", blobs, 3, "saliency", description="maps")
        writer.add_blob_sequence("saliency/maps", blobs[:1], 4, "saliency")
    acc = _read(tmp_path)
    events = acc.Tensors("saliency/maps")
    assert [e.step for e in events] == [3, 4]
    assert events[0].tensor_proto.dtype == types_pb2.DT_STRING
    assert tensor_util.make_ndarray(events[0].tensor_proto).tolist() == blobs
    assert tensor_util.make_ndarray(events[1].tensor_proto).tolist() == blobs[:1]
    metadata = acc.SummaryMetadata("saliency/maps")
    assert metadata.plugin_data.plugin_name == "saliency"
    assert metadata.data_class == summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    assert metadata.summary_description == "maps"
    with pytest.raises(TypeError, match="blobs"):
        writer.add_blob_sequence("t", [b"x", "not bytes"], 0, "saliency")
    with pytest.raises(TypeError, match="blobs"):
        writer.add_blob_sequence("t", b"bytes, not a list of bytes", 0, "saliency")
    with pytest.raises(TypeError, match="plugin_name"):
        writer.add_blob_sequence("t", [b"x"], 0, "")


@pytest.mark.parametrize(
    "shape, expected_shape",
    [((9, 5), (9, 5)), ((9, 5, 1), (9, 5)), ((9, 5, 3), (9, 5, 3)), ((9, 5, 4), (9, 5, 4))],
)
def test_single_and_grayscale_images(tmp_path, shape, expected_shape):
    image = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    with EventWriter(tmp_path) as writer:
        writer.add_images("img", image, 5)
    (event,) = _read(tmp_path).Tensors("img")
    strings = tensor_util.make_ndarray(event.tensor_proto)
    assert list(strings[:2]) == [b"5", b"9"] and len(strings) == 3
    np.testing.assert_array_equal(_decode_png(strings[2]), image.reshape(expected_shape))


def test_histogram_equals_tensorboards_own_numpy_histogram():
    rng = np.random.default_rng(2)
    for data, bins in [
        (rng.normal(size=1000), 30),
        (rng.exponential(size=(10, 10)), 7),
        (np.full(5, 3.5), 4),
        (np.array([]), 30),
        (np.arange(10.0), 1),
    ]:
        ours = writer_module._histogram_buckets(data, bins)
        theirs = tensor_util.make_ndarray(
            histogram_summary.histogram_pb("t", data, buckets=bins).value[0].tensor
        )
        np.testing.assert_array_equal(ours, theirs)


def test_histogram_leaves_out_non_finite_values():
    buckets = writer_module._histogram_buckets([1.0, np.nan, 2.0, np.inf, 3.0], 3)
    np.testing.assert_array_equal(buckets[:, 2], [1, 1, 1])
    assert buckets[0, 0] == 1.0 and buckets[-1, 1] == 3.0


def test_crc32c_matches_reference():
    assert writer_module._crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(3)
    for size in [0, 1, 3, 4, 5, 4095, 4096, 4097, 10_001, 65_536, 200_003]:
        data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        assert writer_module._crc32c(data) == reference_crc32c(data), size


def test_lazy_creation(tmp_path):
    logdir = tmp_path / "runs" / "saliency"
    writer = EventWriter(logdir)
    writer.flush()
    writer.close()
    assert not logdir.exists()
    assert writer.path is None
    writer.add_scalar("s", 1.0, 0)
    assert logdir.is_dir()
    assert os.path.dirname(writer.path) == str(logdir)
    writer.close()


def test_directory_removed_between_writes(tmp_path):
    logdir = tmp_path / "saliency"
    writer = EventWriter(logdir)
    writer.add_scalar("s", 1.0, 0)
    writer.flush()
    first_file = writer.path
    shutil.rmtree(logdir)
    writer.add_scalar("s", 2.0, 1)
    writer.add_images("img", np.zeros((4, 4, 3), np.uint8), 1)
    writer.flush()
    assert writer.path != first_file
    acc = _read(logdir)
    assert [
        (e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors("s")
    ] == [(1, 2.0)]
    assert [e.step for e in acc.Tensors("img")] == [1]
    writer.close()


def test_new_file_after_close_and_several_files_read_in_order(tmp_path):
    writer = EventWriter(tmp_path)
    writer.add_scalar("s", 0.0, 0)
    writer.close()
    writer.close()  # idempotent
    writer.add_scalar("s", 1.0, 1)
    writer.close()
    assert len(os.listdir(tmp_path)) == 2
    assert [e.step for e in _read(tmp_path).Tensors("s")] == [0, 1]


def test_uncreatable_directory_raises_oserror(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    writer = EventWriter(blocker / "saliency")
    with pytest.raises(OSError, match="Cannot create TensorBoard log directory"):
        writer.add_scalar("s", 1.0, 0)


def test_invalid_arguments(tmp_path):
    writer = EventWriter(tmp_path)
    with pytest.raises(TypeError, match="images_u8"):
        writer.add_images("img", np.zeros((4, 4, 3), np.float32), 0)
    with pytest.raises(ValueError, match="images_u8"):
        writer.add_images("img", np.zeros((2, 4, 4, 5), np.uint8), 0)
    with pytest.raises(ValueError, match="images_u8"):
        writer.add_images("img", np.zeros((0, 4, 4, 3), np.uint8), 0)
    with pytest.raises(TypeError, match="step"):
        writer.add_scalar("s", 1.0, 1.5)
    with pytest.raises(ValueError, match="value"):
        writer.add_scalar("s", [1.0, 2.0], 0)
    with pytest.raises(ValueError, match="bins"):
        writer.add_histogram("h", [1.0], 0, bins=0)
    with pytest.raises(TypeError, match="tag"):
        writer.add_text("", "x", 0)
    with pytest.raises(TypeError, match="logdir"):
        EventWriter(None)
    assert writer.path is None  # nothing was written by the failed calls
    writer.add_scalar("s", np.float64(2.5), np.int64(3))  # numpy scalars are fine
    writer.close()


def test_flush_survives_sigkill(tmp_path):
    # The child loads writer.py by path, so the package (and TensorFlow) need not be imported.
    # fsync=False: flush alone must be enough to survive the death of the process.
    child = textwrap.dedent(
        f"""
        import importlib.util, sys, time
        import numpy as np
        spec = importlib.util.spec_from_file_location("ksm_writer", {WRITER_PY!r})
        writer_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(writer_module)
        writer = writer_module.EventWriter({str(tmp_path)!r}, fsync=False)
        for step in range(2):
            writer.add_scalar("loss", float(step), step)
            writer.add_images("img", np.full((3, 6, 8, 3), step, np.uint8), step)
            writer.flush()
        print("FLUSHED 1", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "child did not report within 30 s"
        assert proc.stdout.readline().strip() == "FLUSHED 1"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    acc = _read(tmp_path)
    assert [e.step for e in acc.Tensors("loss")] == [0, 1]
    images = acc.Tensors("img")
    assert [e.step for e in images] == [0, 1]
    last = tensor_util.make_ndarray(images[1].tensor_proto)
    np.testing.assert_array_equal(_decode_png(last[4]), np.full((6, 8, 3), 1, np.uint8))


def test_queued_jobs_finish_at_interpreter_exit(tmp_path):
    marker = tmp_path / "done.txt"
    child = textwrap.dedent(
        f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("ksm_writer", {WRITER_PY!r})
        writer_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(writer_module)
        def slow_write(path):
            time.sleep(0.3)
            open(path, "w").write("ok")
        worker = writer_module.BackgroundWorker()
        worker.submit(slow_write, {str(marker)!r})
        """
    )
    subprocess.run([sys.executable, "-c", child], check=True, timeout=30)
    assert marker.read_text() == "ok"


# --------------------------------------------------------------------------------------------------
# BackgroundWorker
# --------------------------------------------------------------------------------------------------


def test_worker_runs_jobs_in_order():
    worker = BackgroundWorker()
    done = []
    for i in range(50):
        worker.submit(done.append, i)
    assert worker.drain() == []
    assert done == list(range(50))
    assert worker.pending == 0
    worker.close()


def test_worker_captures_exceptions():
    worker = BackgroundWorker()
    done = []

    def fail(message):
        raise ValueError(message)

    worker.submit(done.append, 1)
    worker.submit(fail, "boom", job_name="images epoch 3")
    worker.submit(fail, "again")
    worker.submit(done.append, 2)  # the worker keeps going after a failure
    errors = worker.drain()
    assert done == [1, 2]
    assert [e.job_name for e in errors] == [
        "images epoch 3",
        "test_worker_captures_exceptions.<locals>.fail",
    ]
    name, exc, tb = errors[0]  # plain tuples too
    assert isinstance(errors[0], JobError)
    assert isinstance(exc, ValueError) and str(exc) == "boom"
    assert "ValueError: boom" in tb and "in fail" in tb
    assert worker.drain() == []  # reported once
    worker.close()


def test_full_queue_blocks_instead_of_dropping():
    worker = BackgroundWorker(maxsize=1)
    release = threading.Event()
    started = threading.Event()
    done = []

    def blocker():
        started.set()
        release.wait(10)
        done.append("blocker")

    worker.submit(blocker)
    assert started.wait(5)
    worker.submit(done.append, "queued")  # fills the queue (maxsize=1)
    third_returned = threading.Event()

    def submit_third():
        worker.submit(done.append, "third")
        third_returned.set()

    submitter = threading.Thread(target=submit_third)
    submitter.start()
    assert not third_returned.wait(0.3), "submit should block while the queue is full"
    release.set()
    submitter.join(5)
    assert third_returned.is_set()
    assert worker.drain(timeout=5) == []
    assert done == ["blocker", "queued", "third"]
    worker.close()


def test_drain_timeout_and_close_idempotent():
    worker = BackgroundWorker()
    release = threading.Event()
    worker.submit(release.wait, 10)
    with pytest.raises(TimeoutError):
        worker.drain(timeout=0.05)
    release.set()
    assert worker.close() == []
    assert worker.close() == []
    done = []
    worker.submit(done.append, "after close")  # a later submit starts a new thread
    assert worker.close() == []
    assert done == ["after close"]


def test_worker_guards_against_self_deadlock():
    worker = BackgroundWorker(maxsize=1)
    done = []

    def nested():
        worker.submit(done.append, "inner")  # runs inline on the worker thread
        done.append("outer")
        worker.drain()  # would wait for itself

    worker.submit(nested)
    errors = worker.drain(timeout=5)
    assert done == ["inner", "outer"]
    assert len(errors) == 1 and isinstance(errors[0].exception, RuntimeError)
    worker.close()


def test_synchronous_mode_runs_inline():
    worker = BackgroundWorker(synchronous=True)
    done = []
    worker.submit(done.append, 1)
    assert done == [1]  # already ran
    worker.submit(int, "not a number")
    (error,) = worker.drain()
    assert isinstance(error.exception, ValueError)
    assert worker.close() == []
    assert worker._thread is None


def test_worker_invalid_arguments():
    with pytest.raises(ValueError, match="maxsize"):
        BackgroundWorker(maxsize=0)
    with pytest.raises(TypeError, match="fn"):
        BackgroundWorker(synchronous=True).submit("not callable")


def test_worker_with_writer_end_to_end(tmp_path):
    writer = EventWriter(tmp_path)
    images = np.random.default_rng(4).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    with BackgroundWorker() as worker:
        for step in range(5):
            worker.submit(writer.add_images, "img", images, step)
            worker.submit(writer.add_scalar, "s", float(step), step)
        worker.submit(writer.flush)
        assert worker.drain() == []
    acc = _read(tmp_path)
    assert [e.step for e in acc.Tensors("img")] == list(range(5))
    assert [e.step for e in acc.Tensors("s")] == list(range(5))
    writer.close()


# --------------------------------------------------------------------------------------------------
# Bounded waits and no leaks (issue 13)
# --------------------------------------------------------------------------------------------------


def test_flush_and_close_give_up_on_a_stuck_write(tmp_path):
    writer = EventWriter(tmp_path)
    writer.add_scalar("a", 1.0, 0)
    writer._lock.acquire()  # as a write stuck in the file system holds it
    try:
        assert writer.flush(timeout=0.05) is False
        assert writer.close(timeout=0.05) is False
    finally:
        writer._lock.release()
    assert writer.close(timeout=0.05) is True and writer.flush() is True
    assert _read(tmp_path).Tensors("a")[0].step == 0


def test_idle_worker_thread_keeps_no_job_alive():
    import gc
    import weakref

    class Job:
        def __call__(self):
            pass

    worker = BackgroundWorker()
    job = Job()
    ref = weakref.ref(job)
    worker.submit(job)
    assert worker.wait(10)
    del job
    gc.collect()
    assert ref() is None  # the thread is idle, waiting for the next job: it holds nothing
    assert worker.shutdown(5) is True
    assert worker._thread is None


def test_shutdown_abandons_a_stuck_worker_and_its_thread_ends_later():
    worker = BackgroundWorker()
    gate = threading.Event()
    worker.submit(gate.wait, 30)
    thread = worker._thread
    assert worker.shutdown(0.05) is False  # stuck: abandoned, not waited for
    assert thread.is_alive()
    gate.set()
    thread.join(10)
    assert not thread.is_alive()  # the sentinel queued by abandon() ended it


def test_exit_is_bounded_with_a_stuck_worker(tmp_path):
    child = textwrap.dedent(
        f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("ksm_writer", {WRITER_PY!r})
        writer_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(writer_module)
        writer_module._EXIT_TIMEOUT_SECONDS = 1.0
        stuck = writer_module.BackgroundWorker()  # Ctrl-C mid-fit: never abandoned
        stuck.submit(time.sleep, 3600)
        abandoned = writer_module.BackgroundWorker()
        abandoned.submit(time.sleep, 3600)
        abandoned.abandon()
        """
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", child], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 20
    assert "gave up on background jobs at exit" in proc.stderr


def test_before_new_file_runs_before_each_new_file_and_can_refuse(tmp_path):
    calls = []

    def hook():
        calls.append(sorted(os.listdir(tmp_path / "run")))
        if len(calls) == 3:
            raise OSError(16, "taken by another writer")

    w = EventWriter(tmp_path / "run", before_new_file=hook)
    w.add_scalar("a", 1.0, 0)
    w.add_scalar("a", 2.0, 1)  # the same file: no call
    assert calls == [[]]  # the directory exists, the file does not yet
    shutil.rmtree(tmp_path / "run")
    w.add_scalar("a", 3.0, 2)  # the directory is made again, then a new file
    assert len(calls) == 2 and calls[1] == []
    shutil.rmtree(tmp_path / "run")
    with pytest.raises(OSError, match="taken by another writer"):
        w.add_scalar("a", 4.0, 3)
    assert os.listdir(tmp_path / "run") == []  # refused: no event file was created
    w.close()


def test_idle_worker_thread_ends_and_the_next_submit_starts_another(monkeypatch):
    monkeypatch.setattr(BackgroundWorker, "idle_seconds", 0.2)
    worker = BackgroundWorker()
    done = []
    worker.submit(done.append, 1)
    worker.wait()
    thread = worker._thread
    thread.join(30)  # ends by itself after 0.2 s idle; 30 s is a bound a loaded machine keeps
    assert not thread.is_alive()
    worker.submit(done.append, 2)
    assert worker.drain(30) == []
    assert done == [1, 2]
    worker.close()
