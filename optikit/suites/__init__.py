"""Behavioural test suites (CheckList-style MFT / INV / DIR cases) shipped with optikit, one TOML file per task."""
