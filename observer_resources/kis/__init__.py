"""The KIS Open API client: REST and WebSocket transports, frames, models and errors (docs/kis-protocol.md)."""
