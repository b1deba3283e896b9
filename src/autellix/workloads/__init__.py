"""Workload loaders (ShareGPT, BFCL, LATS, mixed) producing `ProgramSpec`s.

`load_workload(name, n, seed, data=[...])` is the entry point; `with_arrivals` then places the
programs on a Poisson (or bursty) arrival process at a given rate.
"""

from autellix.workloads.arrivals import with_arrivals
from autellix.workloads.loader import KINDS, WORKLOADS, Workload, load_workload
from autellix.workloads.options import WorkloadOptions

__all__ = ["KINDS", "WORKLOADS", "Workload", "WorkloadOptions", "load_workload", "with_arrivals"]
