"""The numbers and the alarm: numpy only, the lowest wing (imports nothing of the package).

``metrics`` (the per-map numbers), ``interventions`` (what blanking a region costs the model),
``learning`` (whether the model learned), ``alarm`` (the shortcut alarm read from them).
"""
