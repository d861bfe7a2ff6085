"""The callback's parts: ``callback`` (``SaliencyMonitor``, wiring only), ``probes`` (the fixed
probe set), ``epoch_numbers`` (the epoch's numbers into ``logs``), ``epoch_log`` (the background
write job), ``writing`` (the events directory while training), ``faults`` (faults never kill
``fit``) and ``distribution`` (which process writes). Imports every wing below it, none above.
"""
