"""The wire contract: every message and subject (`protocol`), the JSON Schemas exported from it
(`schema_export`) and the AsyncAPI document generated from it (`asyncapi`)."""
