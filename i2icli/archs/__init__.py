"""Network architectures that i2i implements itself.

Modules here are pure ``torch.nn`` definitions: they never read files or download
anything, so loading weights (and deciding where they come from) stays with the caller.
"""
