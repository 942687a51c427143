"""Response times and service levels: stage durations from ledger events, and breaches of
the configured levels with their notices."""
