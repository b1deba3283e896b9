"""Discrete-event simulator of program-aware scheduling. Results are SIMULATED and say so."""
