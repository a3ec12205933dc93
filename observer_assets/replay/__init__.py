"""`observer replay` and `observer relay`: the local exchange's server fed by a recorded day or by the live capture.

Here, in the top layer, because it joins two packages below it: the exchange's server (``local_exchange``: accounts,
tokens, rate limits, the WebSocket session) and the lake's readers (the Track B journal, Track A snapshots, the gap
report). ``local_exchange`` itself never imports ``observer_assets`` (docs/architecture.md, "Replay and relay").
"""
