"""Building images from a Dockerfile.

The build package turns a Dockerfile and a context directory into an image,
in stages that are each readable on their own:

1. ``dockerfile``: text -> a list of :class:`~engine.build.dockerfile.Instruction`
   values (parser directives, comments, continuations, JSON forms, flags).
   Pure logic: nothing runs, nothing touches the disk.
2. ``expand``: docker's variable substitution (``$VAR``, ``${VAR:-word}``...),
   applied by the builder to the instructions the reference lists.
3. Later: ``ignore`` (``.dockerignore`` patterns), the builder that runs each
   instruction in a real container, and the cache that explains its hits and
   misses.
"""
