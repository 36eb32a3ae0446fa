"""Reading run directories, and the figures and reports made from them (``fedzo plot``,
``fedzo report``). Everything here reads the files a run leaves on disk (through the
schema of :mod:`fedzo.records`) and nothing else, so it works on runs from any machine.
Importing this package does not import matplotlib; ``plots`` and ``report`` do."""
