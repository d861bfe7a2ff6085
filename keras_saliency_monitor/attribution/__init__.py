"""The attribution engine, model to maps: ``targets`` (which logit), ``methods`` (which method),
``gradients`` (the one compiled, chunked gradient per backend), ``explain`` (the ``Explainer``),
``checks`` (argument checks shared by every wing above) and ``sanity`` (the model-randomisation
check). Imports only ``signals`` below it.
"""
