"""The notifyd command."""
