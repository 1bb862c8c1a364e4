"""Data shared by training, tests and the demo: the synthetic scene renderer (``synthetic``) and
the real on-disk dataset layouts with their readers and writers (``formats``).

Nothing is imported here, so importing one submodule does not pull in the others.
"""
