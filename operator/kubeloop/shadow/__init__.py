"""Shadow challengers: the counters the stable's pods export about their shadow, their
sum over pods, and the paired statistics (docs/shadow.md)."""
