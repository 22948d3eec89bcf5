"""Hides uvloop from a tlsrelay node started by the bench (variant tlsrelay-asyncio).

bench/run.py puts this directory first on PYTHONPATH, so `import uvloop` fails
as if it were not installed and the node runs asyncio's default loop. It is
never on the path of anything but that benchmark variant.
"""

raise ImportError("uvloop hidden by bench/shims/no_uvloop for the asyncio variant")
