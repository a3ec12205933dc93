"""The day's universe: listed stocks whose previous close is at least 4,000 KRW, built before the open and fixed for the day."""
