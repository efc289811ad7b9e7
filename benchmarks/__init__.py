"""Side-by-side benchmarks: aiotmc vs PyVISA + pyvisa-py vs the plain-socket floor.

Run ``python -m benchmarks`` (full, ~7 minutes) or ``python -m benchmarks --quick``.
Layout:

* :mod:`benchmarks.figures` -- what is measured (commands, sizes, targets, clients).
* :mod:`benchmarks.procs` -- subprocess management: CPU pinning, line protocol, cleanup.
* :mod:`benchmarks.simserver` -- the simulator process (aiotmc's SimServer on 127.0.0.1).
* :mod:`benchmarks.usbbed` -- the umockdev device process (an emulated USBTMC scope) and
  the environment its client processes need (``LD_PRELOAD``, ``UMOCKDEV_DIR``).
* :mod:`benchmarks.worker` -- one client per process, one trial per request.
* :mod:`benchmarks.client_aiotmc`, :mod:`benchmarks.client_sync` (aiotmc.sync),
  :mod:`benchmarks.client_pyvisa` (also PyVISA on ``@aiotmc``),
  :mod:`benchmarks.client_floor` -- the clients.
* :mod:`benchmarks.common` -- results, bounded repetition loops.
* :mod:`benchmarks.report` -- statistics, the table and the JSON file.
* :mod:`benchmarks.runner` -- the round-robin schedule (``main``).
* :mod:`benchmarks.hotpath` -- pure client CPU per exchange, layer by layer (profiling aid).
"""
