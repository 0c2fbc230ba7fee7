"""Example custom aggregates for TXN_AGGREGATE (see README, "Your own AggregateFunction")."""
