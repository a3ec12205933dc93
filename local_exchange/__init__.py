"""The local exchange: a KIS-compatible REST and WebSocket server with a synthetic market, for tests and the demo. Not production code."""
