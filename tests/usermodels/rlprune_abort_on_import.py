"""A module whose import aborts the process that imports it."""

import os

os.abort()


def make():  # never reached
    raise AssertionError
