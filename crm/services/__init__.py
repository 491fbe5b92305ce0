"""Every write to the CDP that matters. Split by subject; import from the module that holds it."""
