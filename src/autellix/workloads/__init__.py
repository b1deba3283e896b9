"""Workload loaders (ShareGPT, BFCL, LATS, mixed) producing `ProgramSpec`s."""
