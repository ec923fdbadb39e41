"""Verification of a staged session, by concern; ``deidpipe.verify`` runs it."""
