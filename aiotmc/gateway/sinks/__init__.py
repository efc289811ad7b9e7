"""Storage sinks: where the spool's forwarders deliver readings.

One module per store: ``sqlite`` (the default, local), ``postgres``, ``influx`` (line
protocol over HTTP). Each has a class implementing :class:`aiotmc.gateway.Sink` with
``from_config(section, key)``, listed in :mod:`aiotmc.gateway.plugins`. Conventions (see
:mod:`aiotmc.gateway.sinks.sqlite`, the reference): the constructor does no I/O; ``open``
connects (``SinkUnavailableError`` when the store cannot be reached); ``write`` stores a
batch in one transaction, idempotent by ``Reading.key``, and raises
``SinkUnavailableError`` for anything worth retrying; ``aclose`` is idempotent.
"""
