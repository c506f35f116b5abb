"""models/detection."""
