"""Issue 5: gap reports (pure detection in `detect`, lake reading in `report`, the Dagster asset in `assets`)."""
