"""How services and clients reach each other: NATS/JetStream helpers (`bus`), direct core-NATS
hops with a JetStream fallback (`direct`), the publisher the frontend and the scheduler share
(`publisher`) and small asyncio helpers (`aio`). No scheduling logic lives here."""
