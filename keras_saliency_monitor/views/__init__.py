"""Reading a run back: ``report`` (GIF, PNG and HTML reports), ``launcher`` (starting
TensorBoard) and ``dashboard`` (the SALIENCY dashboard, a TensorBoard plugin). The top wing:
only the command line (``cli``, at the package's top level) imports it.
"""
