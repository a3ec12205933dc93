"""Track B: the WebSocket trade capture (slots, triggers, journal, supervisor) and its compaction into ticks."""
