"""This folder holds a harness (run_suite.py) for transformers' own Phi tests, not tests of this repository:
keep it out of the default collection. See README.md here to run it."""

collect_ignore = ["run_suite.py", "phi_substitute.py"]
collect_ignore_glob = ["*.py"]
