"""Jinja2's immutable sandbox, closed further against templates that allocate without bound.

The sandbox already refuses ``_``-attributes and mutation. What it lets through are single
C-level calls that build huge values from a small template (``'a' * 10**9``,
``'%999999999s' | format(1)``, ``9 ** 9 ** 9``): one such call runs to completion (or to an
out-of-memory kill) before any time limit can interrupt it. So every operator, filter and
method that can grow a value is checked *before* it runs, against the size of its result.
Loops are pure bytecode and are left to the deadline (deadline.py); ``range`` is capped by
the sandbox. Constant folding is off, so nothing a template says is evaluated at save time.
"""

from __future__ import annotations

import re
import string
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

MAX_VALUE_CHARS = 256 * 1024  # any string or list a template builds, and each rendered field
MAX_FORMAT_WIDTH = 10_000  # widths and precisions in format strings and padding
MAX_INT_BITS = 16_384
MAX_JSON_INDENT = 16
MAX_BATCH = 10_000

# Methods of plain values a template may call. Anything else bound to a str, number, list or
# dict (int.to_bytes, str.encode, ...) is refused as unsafe.
_ALLOWED_METHODS: Mapping[type, frozenset[str]] = {
    str: frozenset(
        {
            "capitalize",
            "casefold",
            "center",
            "count",
            "endswith",
            "expandtabs",
            "find",
            "format",
            "format_map",
            "index",
            "isalnum",
            "isalpha",
            "isdecimal",
            "isdigit",
            "islower",
            "isnumeric",
            "isspace",
            "istitle",
            "isupper",
            "join",
            "ljust",
            "lower",
            "lstrip",
            "partition",
            "removeprefix",
            "removesuffix",
            "replace",
            "rfind",
            "rindex",
            "rjust",
            "rpartition",
            "rsplit",
            "rstrip",
            "split",
            "splitlines",
            "startswith",
            "strip",
            "swapcase",
            "title",
            "upper",
            "zfill",
        }
    ),
    dict: frozenset({"items", "keys", "values", "get"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
    int: frozenset(),
    float: frozenset({"is_integer"}),
}
_PERCENT = re.compile(
    r"%(?:\([^)]*\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?."
)
_DIGITS = re.compile(r"\d+")


def _refuse(message: str) -> SecurityError:
    return SecurityError(message)


def _check_len(length: int, what: str) -> None:
    if length > MAX_VALUE_CHARS:
        raise _refuse(f"{what} would be longer than {MAX_VALUE_CHARS} characters")


def _check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and value > MAX_FORMAT_WIDTH:
        raise _refuse(f"{what} {value} is wider than {MAX_FORMAT_WIDTH}")


def check_percent_format(fmt: str) -> None:
    for m in _PERCENT.finditer(fmt):
        for part in ("width", "precision"):
            given = m[part]
            if given == "*":
                raise _refuse("'*' widths are not allowed in format strings")
            if given is not None:
                _check_width(int(given), f"format {part}")


def check_brace_format(fmt: str) -> None:
    for _, name, spec, _ in string.Formatter().parse(fmt):
        if name is None or not spec:
            continue
        if "{" in spec:
            raise _refuse("nested fields are not allowed in format specifications")
        for digits in _DIGITS.findall(spec):
            _check_width(int(digits), "format width")


def _check_repeat(left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            _check_len(len(seq) * max(count, 0), "the repeated value")
            return
    ints = isinstance(left, int) and isinstance(right, int)
    if ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise _refuse(f"the product would exceed {MAX_INT_BITS} bits")


def _check_power(base: Any, exponent: Any) -> None:
    ints = isinstance(base, int) and isinstance(exponent, int)
    if ints and abs(base) > 1 and exponent > 0 and base.bit_length() * exponent > MAX_INT_BITS:
        raise _refuse(f"the power would exceed {MAX_INT_BITS} bits")


def _check_result(value: Any) -> Any:
    if isinstance(value, str | list | tuple):
        _check_len(len(value), "the result")
    return value


def _checked_join(separator: str, items: Iterable[Any]) -> list[Any]:
    listed = list(items)
    _check_len(len(listed), "the joined list")
    total = len(separator) * max(len(listed) - 1, 0)
    for item in listed:
        total += len(item) if isinstance(item, str) else len(str(item))
        _check_len(total, "the joined string")
    return listed


def _replaced_length(s: str, old: str, new: str, count: Any) -> int:
    found = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * (len(new) - len(old))


def _check_str_method(s: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name in ("ljust", "rjust", "center", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        _check_width(width, f"{name} width")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            _check_len(len(s) + s.count("\t") * size, "the expanded string")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str):
        new = args[1] if isinstance(args[1], str) else ""
        _check_len(_replaced_length(s, args[0], new, args[2] if len(args) > 2 else -1), "result")


# -- filters that can grow a value, checked first --------------------------------------------


def _guarded_filters() -> dict[str, Callable[..., Any]]:
    original = FILTERS

    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        check_percent_format(str(value))
        return original["format"](value, *args, **kwargs)

    def center(value: Any, width: int = 80) -> Any:
        _check_width(width, "center width")
        return original["center"](value, width)

    def indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> Any:
        pad = width if isinstance(width, int) else len(str(width))
        _check_width(pad, "indent width")
        _check_len(len(str(s)) + str(s).count("\n") * pad + pad, "the indented string")
        return original["indent"](s, width, first, blank)

    def batch(value: Any, linecount: int, fill_with: Any = None) -> Any:
        if linecount > MAX_BATCH:
            raise _refuse(f"batch size {linecount} is larger than {MAX_BATCH}")
        return original["batch"](value, linecount, fill_with)

    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = _checked_join(d, value) if attribute is None else list(value)
        return _check_result(original["join"](eval_ctx, items, d, attribute))

    def replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> Any:
        _check_len(_replaced_length(str(s), str(old), str(new), count), "the replaced string")
        return original["replace"](eval_ctx, s, old, new, count)

    def sum_(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if not isinstance(start, int | float):
            raise _refuse("sum only adds numbers")
        return original["sum"](environment, iterable, attribute, start)

    def tojson(eval_ctx: Any, value: Any, indent: int | None = None) -> Any:
        if indent is not None and indent > MAX_JSON_INDENT:
            raise _refuse(f"tojson indent is larger than {MAX_JSON_INDENT}")
        return _check_result(original["tojson"](eval_ctx, value, indent))

    guarded: dict[str, Callable[..., Any]] = {
        "format": format_,
        "center": center,
        "indent": indent,
        "batch": batch,
        "join": join,
        "replace": replace,
        "sum": sum_,
        "tojson": tojson,
    }
    # Keep each original's pass_eval_context / pass_environment marker.
    for name, fn in guarded.items():
        if hasattr(original[name], "jinja_pass_arg"):
            fn.jinja_pass_arg = original[name].jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


class _CheckedConcatGenerator(CodeGenerator):
    """``a ~ b`` builds its string in one C call; route it through a size check."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class TemplateSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _CheckedConcatGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=autoescape,
            keep_trailing_newline=False,
            # Constant folding would run filters at save time, outside every limit.
            optimized=False,
            auto_reload=False,
            cache_size=0,
        )
        # lipsum, cycler and joiner are not needed by a notification and widen the surface.
        self.globals = {"range": self.globals["range"], "dict": dict, "namespace": Namespace}
        self.filters.update(_guarded_filters())

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
        elif operator == "**":
            _check_power(left, right)
        elif operator == "%" and isinstance(left, str):
            check_percent_format(left)
        result = self.binop_table[operator](left, right)
        return _check_result(result) if operator == "+" else result

    def checked_concat(self, join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> Any:
        return _check_result(join(parts))

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        owner = getattr(value, "__self__", None)
        if isinstance(value, types.BuiltinMethodType | types.MethodType) and not isinstance(
            owner, types.ModuleType
        ):
            for kind, allowed in _ALLOWED_METHODS.items():
                if isinstance(owner, kind):
                    return attr in allowed
        return True

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            check_brace_format(str(value.__self__))
        return wrapped

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name == "join" and len(args) == 1 and not kwargs:
                return _check_result(__obj(_checked_join(owner, args[0])))
            _check_str_method(owner, name, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)
