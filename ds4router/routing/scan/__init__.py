"""Scanning request text for credentials and personal data: the pieces a request carries."""
