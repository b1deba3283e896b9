"""What every service process shares: settings from flags and environment (`settings`), logging
and tracing (`telemetry`) and the run loop with signal handling and loop-stall watch (`service`)."""
