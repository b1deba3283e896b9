"""`autellix chaos`: SIGKILL each part of a running stack under load and count what it cost.

One module per job: `load` (the programs the Python client keeps running), `wiretap` (every
answer on the wire, to see one answered twice), `faults` (kill a part, wait for its restart),
`rss` (memory of each service over a soak), `accounting` (accepted / completed / failed / lost /
duplicated per fault, checked against Postgres; recovery time), `report` (JSON, Markdown, PNG)
and `run` (the stack and the order of the phases).
"""
