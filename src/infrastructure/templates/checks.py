"""Save-time checks of one template source: it compiles, reaches for no ``_`` names, includes
nothing, and uses only declared variables."""

from __future__ import annotations

from collections.abc import Iterator, Set

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment


def _private_access(tree: nodes.Template) -> Iterator[str]:
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
            arg = node.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else ""
        else:
            continue
        if isinstance(name, str) and name.startswith("_"):
            yield name


_UNBOUNDED = (nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.FilterBlock)


def source_problem(env: SandboxedEnvironment, source: str, declared: Set[str]) -> str | None:
    """Why ``source`` cannot be stored, or None."""
    try:
        tree = env.parse(source)
        if any(True for _ in tree.find_all((nodes.Extends, nodes.Include, nodes.Import))):
            return "templates cannot extend, include or import other templates"
        if any(True for _ in tree.find_all(nodes.FromImport)):
            return "templates cannot import other templates"
        # Their bodies are joined into one string in a single step, which neither the output
        # cap nor the deadline can interrupt; a notification template does not need them.
        if any(True for _ in tree.find_all(_UNBOUNDED)):
            return (
                "block set ({% set x %}...{% endset %}), macros, call and filter blocks are "
                "not allowed"
            )
        private = sorted(set(_private_access(tree)))
        if private:
            names = ", ".join(private)
            return f"reaches for internals ({names}): names starting with '_' are not allowed"
        undeclared = sorted(meta.find_undeclared_variables(tree) - set(declared))
        if undeclared:
            names = ", ".join(repr(n) for n in undeclared)
            return f"uses undeclared variables {names}: declare them in variables"
        env.compile(source)
    except TemplateSyntaxError as error:
        return f"syntax error on line {error.lineno}: {error.message}"
    except RecursionError:
        return "nested too deeply"
    return None
