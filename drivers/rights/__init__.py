"""Data-subject rights and retention over every feature's holdings."""
