"""Operations: the system event log summary, daily backups, restore and retention."""
