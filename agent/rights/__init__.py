"""Data-subject rights (export, erasure) and retention over registered stores."""
