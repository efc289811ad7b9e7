"""Tests of ``aiotmc gateway``. The gateway application runs on asyncio only (its MQTT
client, aiomqtt, is asyncio-only): app-level tests pin ``anyio_backend`` to asyncio; the
parts that are plain anyio (hub, spool, sources, sinks) run on asyncio and trio."""
