"""Raw maps on disk: exact float32 round trip, extras, atomic writes that survive a SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_saliency_monitor.storage import arrays


def test_round_trip_is_exact_float32_with_extras(tmp_path):
    rng = np.random.default_rng(0)
    maps = (rng.random((4, 8, 8)) * 1e-9).astype(np.float32)  # raw gradients can be this small
    path = arrays.save_epoch(
        tmp_path, 7, maps, classes=np.array([0, 1, 2, 1]), logits=rng.random((4, 3))
    )
    assert path == os.path.join(tmp_path, "saliency", "arrays", "epoch_0007.npz")
    arrays.save_epoch(tmp_path, 12, maps * 2)
    loaded = arrays.load_arrays(tmp_path)
    assert list(loaded) == [7, 12]
    assert loaded[7]["maps"].dtype == np.float32
    np.testing.assert_array_equal(loaded[7]["maps"], maps)  # float16 would flush these to zero
    np.testing.assert_array_equal(loaded[7]["classes"], [0, 1, 2, 1])
    assert loaded[7]["logits"].shape == (4, 3) and int(loaded[12]["epoch"]) == 12
    assert sorted(os.listdir(arrays.arrays_dir(tmp_path))) == ["epoch_0007.npz", "epoch_0012.npz"]


def test_never_overwrites_an_epoch_and_empty_dir(tmp_path):
    assert arrays.load_arrays(tmp_path) == {} and arrays.last_saved_epoch(tmp_path) is None
    arrays.save_epoch(tmp_path, 0, np.zeros((1, 2, 2)))
    with pytest.raises(FileExistsError, match="never overwritten"):
        arrays.save_epoch(tmp_path, 0, np.ones((1, 2, 2)))  # a second fit over the same log dir
    np.testing.assert_array_equal(arrays.load_arrays(tmp_path)[0]["maps"], np.zeros((1, 2, 2)))
    assert os.listdir(arrays.arrays_dir(tmp_path)) == ["epoch_0000.npz"]  # no temporary left
    assert arrays.last_saved_epoch(tmp_path) == 0


@pytest.mark.parametrize(
    "epoch, maps, extra, error",
    [
        (-1, np.zeros((1, 2, 2)), {}, ValueError),
        (True, np.zeros((1, 2, 2)), {}, ValueError),
        (0, np.zeros((2, 2)), {}, ValueError),
        (0, np.zeros((1, 2, 2)), {"epoch": np.zeros(1)}, ValueError),
        (0, np.zeros((1, 2, 2)), {"maps": np.zeros(1)}, ValueError),
        (0, np.zeros((1, 2, 2)), {"names": np.array([object()])}, TypeError),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, epoch, maps, extra, error):
    with pytest.raises(error):
        arrays.save_epoch(tmp_path, epoch, maps, **extra)
    directory = arrays.arrays_dir(tmp_path)
    assert not os.path.isdir(directory) or os.listdir(directory) == []


def test_atomic_file_replaces_only_when_asked_and_leaves_nothing_on_failure(tmp_path):
    path = str(tmp_path / "out.bin")
    with arrays.atomic_file(path, prefix=".t.", overwrite=True, mode=0o644) as f:
        f.write(b"one")
    with arrays.atomic_file(path, prefix=".t.", overwrite=True, mode=0o644) as f:
        f.write(b"two")
    assert open(path, "rb").read() == b"two" and os.stat(path).st_mode & 0o777 == 0o644
    with pytest.raises(FileExistsError), arrays.atomic_file(path, prefix=".t.") as f:
        f.write(b"three")
    with pytest.raises(RuntimeError), arrays.atomic_file(str(tmp_path / "new"), prefix=".t.") as f:
        f.write(b"half")
        raise RuntimeError("writer died")
    assert os.listdir(tmp_path) == ["out.bin"] and open(path, "rb").read() == b"two"


def test_sigkill_mid_write_never_leaves_a_torn_file(tmp_path):
    """A writer killed in the middle of a write leaves only complete files (temporaries ignored)."""
    module = os.path.abspath(arrays.__file__)
    script = textwrap.dedent(
        f"""
        import importlib.util
        import numpy as np
        # Load arrays.py alone: importing the package would import TensorFlow (seconds).
        spec = importlib.util.spec_from_file_location("ksm_arrays", {module!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        maps = np.random.default_rng(0).random((32, 128, 128)).astype(np.float32)  # 2 MB
        for epoch in range(10_000):
            mod.save_epoch({str(tmp_path)!r}, epoch % 5, maps + epoch, step=np.int64(epoch))
            print(epoch, flush=True)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        written = 0
        while written < 2 and time.monotonic() < deadline:  # several complete writes first
            line = process.stdout.readline()
            assert line, "the writer died"
            written += 1
        time.sleep(0.05)  # then kill it in the middle of the next write (each takes > 50 ms)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        process.stdout.close()
    loaded = arrays.load_arrays(tmp_path)
    assert len(loaded) >= 2
    maps = np.random.default_rng(0).random((32, 128, 128)).astype(np.float32)
    for epoch, data in loaded.items():
        step = int(data["step"])
        assert step % 5 == epoch
        np.testing.assert_array_equal(data["maps"], maps + step)  # one whole write


def test_monitor_save_arrays_equals_logged_maps(tmp_path):
    """save_arrays=True leaves one npz per logged epoch holding the maps of that epoch."""
    from keras_saliency_monitor import SaliencyMonitor, compute_saliency

    from .helpers import tiny_cnn, tiny_data

    x, y = tiny_data()
    model = tiny_cnn()
    monitor = SaliencyMonitor(tmp_path, (x, y), num_probes=5, save_arrays=True)
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[monitor])
    saved = arrays.load_arrays(str(tmp_path))
    assert sorted(saved) == [0, 1]
    np.testing.assert_allclose(
        saved[1]["maps"], compute_saliency(model, monitor.probes.x), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_array_equal(saved[1]["labels"], monitor.probes.labels)
