"""A stand-in for django-logical-replication, which the tests do not install:
its decorators, storing their marks exactly as the real package does
(logical_replication/utils/decorators.py), so that models written for it can
be read unchanged."""
