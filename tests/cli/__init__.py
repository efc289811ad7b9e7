"""Tests of the aiotmc command line."""
