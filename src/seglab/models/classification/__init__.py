"""models/classification."""
