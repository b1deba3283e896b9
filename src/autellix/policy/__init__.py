"""Pure scheduling policies (no I/O): shared by the live scheduler and the simulator."""
