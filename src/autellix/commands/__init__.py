"""Sub-commands of the `autellix` CLI; each module exposes `register(app)`."""
