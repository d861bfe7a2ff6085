"""``python -m keras_saliency_monitor``: the same command line as ``keras-saliency-monitor``."""

import sys

from keras_saliency_monitor.cli import main

if __name__ == "__main__":
    sys.exit(main())
