"""The command line: the click app, its shared options, terminal rendering, the demo, bench.

Nothing here holds logic of its own: commands parse their options, call the
Python API (:mod:`bulkpar.api`), and render the Report. Only this package
imports click and rich; its modules are imported only when used (the
library takes :class:`bulkpar.cli.progress.TqdmProgress` for ``progress=True``
without loading click).
"""
