"""The ``facetalk`` command: a click group whose subcommands load lazily, one module each.

Flags for every GenerationOptions field are generated from the dataclass (the field
name with dashes; see ``common``), so the CLI cannot drift from the library. Errors print
one line with a hint and exit non-zero; set FACETALK_DEBUG=1 to see a traceback instead.
"""

from __future__ import annotations

import click

from .._version import __version__
from .common import options_from_flags

__all__ = ["main", "options_from_flags"]


#: Every subcommand lives in its own module, imported only when used (so that
#: ``facetalk render`` never loads the web stack). name -> "module:attribute".
LAZY_COMMANDS: dict[str, str] = {
    "render": "facetalk.cli.render:render",
    "demo": "facetalk.cli.render:demo",
    "bench": "facetalk.cli.bench:bench",
    "batch": "facetalk.cli.batch:batch",
    "eval": "facetalk.cli.eval:eval_command",
    "serve": "facetalk.cli.serve:serve",
    "worker": "facetalk.cli.serve:worker",
    "verify": "facetalk.cli.verify:verify_command",
    "doctor": "facetalk.cli.doctor:doctor",
    "stream-bench": "facetalk.cli.stream_bench:stream_bench",
    "comfyui": "facetalk.comfyui.cli:comfyui",
}


class LazyGroup(click.Group):
    """A click group whose extra subcommands are imported on first use."""

    def _available(self) -> dict[str, str]:
        import importlib.util

        out = {}
        for name, target in LAZY_COMMANDS.items():
            module = target.split(":")[0]
            try:
                if importlib.util.find_spec(module) is not None:
                    out[name] = target
            except ModuleNotFoundError:
                continue
        return out

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names |= {n for n in self._available() if self.get_command(ctx, n) is not None}
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        target = self._available().get(name)
        if target is None:
            return None
        import importlib

        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr, None)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="facetalk")
def main() -> None:
    """facetalk: one portrait + one speech recording -> a talking MP4, offline on a CPU."""


if __name__ == "__main__":  # pragma: no cover
    main()
