"""Networks (a registry of factories), datasets and their fixed splits, dense training."""
