"""Daily history: raw and adjusted daily bars of the universe, one table per calendar year."""
