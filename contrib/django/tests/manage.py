#!/usr/bin/env python3
"""The test project of pgoutpost's Django companion: the reference Django schema's apps."""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    # The companion itself, importable without being installed.
    sys.path.insert(0, os.path.dirname(here))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
