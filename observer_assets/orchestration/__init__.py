"""What every domain runs on: partitions, the partition registrar, run tags, pools and run-time budgets."""
