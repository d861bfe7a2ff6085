import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Keep tests on the CPU with two threads: they must run in minutes on a 2-core machine.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
