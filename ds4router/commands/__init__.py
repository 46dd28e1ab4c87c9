"""CLI sub-commands, one module each, loaded lazily by ``ds4router.cli``.

Each module exposes ``command``: a ``click.Command`` or ``click.Group``.
Keep heavy imports (litellm, mlx, textual, torch) inside the command bodies.
"""
