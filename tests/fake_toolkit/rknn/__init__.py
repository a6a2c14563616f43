"""FAKE rknn-toolkit2 for the worker protocol and fault unit tests only; converts nothing."""
