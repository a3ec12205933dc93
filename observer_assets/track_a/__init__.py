"""Track A: a REST snapshot of every universe symbol every 10 minutes of the session, and its restore from minute bars."""
