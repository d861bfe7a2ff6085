"""Reading a run back: ``report`` (HTML and PNG reports), ``launcher`` (starting TensorBoard) and
``dashboard`` (the SALIENCY dashboard, a TensorBoard plugin). The top wing: only ``cli`` and
``demo`` beside it import it.
"""
