"""Wire-compatibility tests: third-party KIS clients against the local exchange, base URLs changed only."""
