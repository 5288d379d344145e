"""Side-by-side measurements against the peers; each benchmark prints one JSON line."""
