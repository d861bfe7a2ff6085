"""Maps to pictures: colour maps, overlays, framed tiles and the captioned grid (``render``).

Used by the callback (the images it logs), by storage (thumbnails) and by the views; imports
nothing of the package.
"""
