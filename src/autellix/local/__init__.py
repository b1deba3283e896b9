"""Running a whole stack on one machine: embedded NATS and Postgres (`embedded`), the service
processes it starts (`stack`) and the supervisor that keeps them running (`supervisor`)."""
