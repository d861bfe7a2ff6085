"""What is on disk and how it is read back: ``writer`` (the event file and its bounded
background worker), ``store`` (the stored maps and probe sets; the reader), ``arrays`` (raw maps
as ``.npz``) and ``logdirs`` (the events directory, its lock and step numbers). Imports only
``drawing`` below it.
"""
