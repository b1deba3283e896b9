"""`autellix bench cluster`: the control plane past one engine and one NATS server.

Three parts, each a module; `run` joins them into `cluster.json` and `report` writes the
Markdown and the plot:

- `load`:     a steady load of mixed programs over the wire, every reply recorded per inbox
              (what is accepted, answered, failed, lost or answered twice)
- `procstat`: CPU seconds of service processes, from /proc
- `pgstat`:   Postgres commit and row-write counters (`pg_stat_database`, `pg_stat_user_tables`)
- `scaling`:  `engines_scaling`: 8 .. 1,000 light engine identities, 1, 2, 4 scheduler replicas
- `failover`: `nats_failover`: a three-server NATS cluster, one server SIGKILLed and restarted
- `pooler`:   `pgbouncer`: the same load on Postgres directly and through PgBouncer
              (transaction pooling), rounds in rotated order
"""
