"""The numbers and the alarm: numpy only, the lowest wing (imports nothing of the package).

One module per family of numbers: ``metrics`` (the shared checks, masks, focus and lift),
``place`` (border and place, without masks), ``stability`` (rank correlations), ``reliance``
(what painting the object over costs the model), ``interventions`` (the same without masks),
``learning`` (whether the model learned; probe skill); and ``alarm``, which reads them.
"""
