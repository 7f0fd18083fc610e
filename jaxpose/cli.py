"""The ``jaxpose`` command: ``jaxpose predict ...`` and ``jaxpose export ...``."""
from __future__ import annotations

import sys

COMMANDS = {
    "predict": "jaxpose.predict",
    "export": "jaxpose.export",
}


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] not in COMMANDS:
    print(f"usage: jaxpose {{{','.join(COMMANDS)}}} ...  (jaxpose COMMAND --help)",
          file=sys.stderr)
    return 0 if argv and argv[0] in ("-h", "--help") else 1
  import importlib
  # No jaxpose.host_memory policy: it is training's, and it slows batched inference.
  return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
  sys.exit(main())
