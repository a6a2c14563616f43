"""FAKE rknn-toolkit2 for the worker protocol and fault-handling unit tests only; converts nothing."""
