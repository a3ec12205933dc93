"""Backups: verified daily packages, restore, and retention that never deletes what is not backed up."""
