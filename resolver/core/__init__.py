"""The decision core: pure functions and immutable objects, no I/O."""
