"""Storage sinks: where the spool's forwarders deliver readings."""
