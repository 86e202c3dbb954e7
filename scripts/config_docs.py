"""Write docs/configuration.md: every config key, with its meaning and its default.

    .venv/bin/python scripts/config_docs.py            # (re)write docs/configuration.md   (make docs)
    .venv/bin/python scripts/config_docs.py --check    # exit 1 if it is not what this script would write

Keys: the fields of the typed schemas (dataclasses) that ``import dtp_bench.schemas`` registers in Hydra's
ConfigStore, nested dataclasses as dotted keys. Meanings: the source comment on each field (trailing, with
its indented continuation lines, or the comment lines directly above it; for an inherited field, the
nearest class in the MRO that comments it). Defaults: what Hydra composes from conf/ for each option
(``python train.py group=option``), every other group at its default. Re-running it is idempotent.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402

import dtp_bench.schemas  # noqa: E402,F401  (registers every schema in the ConfigStore)
from dtp_bench.config import Config  # noqa: E402
from dtp_bench.menu import config_groups  # noqa: E402

CONF = ROOT / "conf"
DEFAULT_OUT = ROOT / "docs" / "configuration.md"
SPEC_DIRS = ("spec/algorithm_arch", "spec/algorithm_dataset")
NO_SPEC = [f"~{d}" for d in SPEC_DIRS]  # the same composition without the per-combination files
ABSENT = "—"  # the option's schema has no such key
SPEC_MARK = "†"
SECTIONS = ("trainer", "dataset", "logger", "diagnostics", "arch", "algorithm")  # the order in the doc

# ---------------------------------------------------------------------------- meanings from the source
@functools.cache
def own_comments(cls: type) -> dict[str, str]:
    """{field: comment text} for the fields annotated in ``cls``'s own body."""
    source = textwrap.dedent(inspect.getsource(cls))
    body = ast.parse(source).body[0].body
    spans = {node.target.id: (node.lineno, node.end_lineno) for node in body
             if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    comments: dict[int, tuple[str, bool]] = {}  # line -> (text, alone on its line)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = (tok.string, not tok.line[:tok.start[1]].strip())
    trailing: dict[str, list[str]] = {}
    continuation: set[int] = set()
    for name, (first, last) in spans.items():
        parts = [comments[r][0] for r in range(first, last + 1) if r in comments and not comments[r][1]]
        row = last + 1
        # a trailing comment continues on comment lines indented past the '#' ("#    more text")
        while parts and row in comments and comments[row][1] and re.match(r"#\s{2,}", comments[row][0]):
            parts.append(comments[row][0])
            continuation.add(row)
            row += 1
        trailing[name] = parts
    out = {}
    for name, (first, _) in spans.items():
        above, row = [], first - 1
        while (row in comments and comments[row][1] and row not in continuation
               and not comments[row][0].startswith("# ----")):  # "# ---- section" headers belong to no field
            above.insert(0, comments[row][0])
            row -= 1
        out[name] = join_sentences(squash(above), squash(trailing[name]))
    return out


def squash(comments: list[str]) -> str:
    """Comment lines as one line of text: no '#', single spaces."""
    return " ".join(" ".join(c.lstrip("#") for c in comments).split())


def join_sentences(first: str, second: str) -> str:
    if not first or not second:
        return first or second
    return f"{first} {second}" if first[-1] in ".:;," else f"{first}; {second}"


def field_meaning(cls: type, name: str) -> str:
    """The comment on ``name`` in the nearest class of ``cls``'s MRO that declares and comments it."""
    for klass in cls.__mro__:
        if dataclasses.is_dataclass(klass) and name in klass.__dict__.get("__annotations__", {}):
            text = own_comments(klass).get(name, "")
            if text:
                return text
    return ""


# ---------------------------------------------------------------------------- the schemas
@dataclasses.dataclass(frozen=True)
class Key:
    key: str  # dotted, from the config's root
    owner: type  # the dataclass holding the field
    name: str
    node: type | None  # the nested dataclass, for a field that holds one

    @property
    def meaning(self) -> str:
        return field_meaning(self.owner, self.name)

    @property
    def schema_default(self) -> Any:
        f = next(f for f in dataclasses.fields(self.owner) if f.name == self.name)
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default


def nested_dataclass(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)


def walk(cls: type, prefix: str) -> list[Key]:
    """Every field of ``cls`` and of the dataclasses nested in it, as dotted keys, in field order."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        node = nested_dataclass(hints[f.name])
        keys.append(Key(prefix + f.name, cls, f.name, node))
        if node is not None:
            keys += walk(node, f"{prefix}{f.name}.")
    return keys


def store_schemas() -> dict[str, list[type]]:
    """{group: [schema classes]} as Hydra's ConfigStore holds them (Hydra's own groups aside)."""
    from hydra.core.config_store import ConfigStore

    out: dict[str, list[type]] = {}
    for group, entries in ConfigStore.instance().repo.items():
        if isinstance(entries, dict) and group != "hydra":
            types = [OmegaConf.get_type(entries[name].node) for name in sorted(entries)]
            out[group] = list(dict.fromkeys(t for t in types if dataclasses.is_dataclass(t)))
    return out


# ---------------------------------------------------------------------------- composed values
class Composer:
    """``compose("config", overrides)`` inside one Hydra context, cached."""

    def __init__(self) -> None:
        from hydra import initialize_config_dir

        self._context = initialize_config_dir(config_dir=str(CONF), version_base="1.3")
        self._cache: dict[tuple[tuple[str, ...], bool], DictConfig] = {}

    def __enter__(self) -> Composer:
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def __call__(self, overrides: list[str], hydra: bool = False) -> DictConfig:
        from hydra import compose

        key = (tuple(overrides), hydra)
        if key not in self._cache:
            self._cache[key] = compose("config", overrides=overrides, return_hydra_config=hydra)
        return self._cache[key]


class Missing:
    """The key is not in the composed config (its parent is null)."""


def composed_value(cfg: DictConfig, key: str) -> Any:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent:
        return Missing
    if OmegaConf.is_missing(parent, leaf):
        return "???"
    value = parent[leaf]
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def yaml_value(value: Any) -> str:
    """Compact YAML-like text, as one would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if value == "":
        return '""'
    return str(value)


@dataclasses.dataclass
class Column:
    """What ``python train.py [group=option]`` composes, and the same without the spec files."""

    option: str
    cfg: DictConfig
    base: DictConfig
    specs: list[str]  # the spec files this composition reads (relative to conf/)
    schema: type | None  # the group's dataclass in this composition


def columns_for(compose: Composer, group: str | None) -> list[Column]:
    """A column per option of ``group``, in file order (None: the default composition alone)."""
    out = []
    for option in config_groups(CONF)[group] if group else [None]:
        overrides = [f"{group}={option}"] if group else []
        cfg = compose(overrides, hydra=True)
        choices = cfg.hydra.runtime.choices
        specs = [f"{d}/{choices[d]}.yaml" for d in SPEC_DIRS if (CONF / d / f"{choices[d]}.yaml").exists()]
        schema = OmegaConf.get_type(cfg[group]) if group else None
        out.append(Column(option or "default", cfg, compose(overrides + NO_SPEC), specs, schema))
    return out


def cell(column: Column, key: str, notes: set[str], fallback: Any = Missing) -> str:
    """``key``'s value in ``column``, in backticks, with † (and a note) when a spec file set it;
    ``fallback`` where the composed config lacks the key (a null parent)."""
    value = composed_value(column.cfg, key)
    if value is Missing:
        return ABSENT if fallback is Missing else f"`{escape(yaml_value(fallback))}`"
    text = f"`{escape(yaml_value(value))}`"
    if composed_value(column.base, key) != value:
        notes.update(column.specs)
        text += f" {SPEC_MARK}"
    return text


# ---------------------------------------------------------------------------- markdown
def escape(text: str) -> str:
    """Text that a Markdown table cell shows as written."""
    return re.sub(r"([|<*~\\])", r"\\\1", text)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def spec_note(notes: set[str]) -> str:
    if not notes:
        return ""
    files = ", ".join(f"`conf/{n}`" for n in sorted(notes))
    return f"\n\n{SPEC_MARK} set by a per-combination file of that composition, not by the option's own file: {files}."


def meaning_cell(variants: list[tuple[list[str], Key]]) -> str:
    """One meaning, or one per schema (labelled with its options) where the schemas comment the key
    differently."""
    by_text: dict[str, list[str]] = {}
    for options, key in variants:
        text = key.meaning
        if not text:
            raise SystemExit(f"config_docs: {key.key} has no meaning: add a comment to the field "
                             f"{key.owner.__name__}.{key.name} in {Path(inspect.getsourcefile(key.owner)).name}")
        by_text.setdefault(text, []).extend(options)
    if len(by_text) == 1:
        return escape(next(iter(by_text)))
    return "<br>".join(f"**{', '.join(sorted(options))}:** {escape(text)}" for text, options in by_text.items())


def group_keys(columns: list[Column], schemas: list[type], group: str) -> dict[str, list[tuple[list[str], Key]]]:
    """{dotted key: [(options, Key) for each schema that has it]}: the union over the group's schemas,
    those of the first columns first; ``options`` are the options that use the schema."""
    used = list(dict.fromkeys(c.schema for c in columns if c.schema in schemas))
    keys: dict[str, list[tuple[list[str], Key]]] = {}
    for schema in used + [s for s in schemas if s not in used]:
        options = [c.option for c in columns if c.schema is schema] or [f"{schema.__name__} (no option)"]
        for key in walk(schema, f"{group}."):
            keys.setdefault(key.key, []).append((options, key))
    return keys


def has_key(schema: type | None, key: str, group: str) -> bool:
    return schema is not None and key in schema_keys(schema, group)


@functools.cache
def schema_keys(schema: type, group: str) -> frozenset[str]:
    return frozenset(k.key for k in walk(schema, f"{group}."))


class Writer:
    def __init__(self, compose: Composer) -> None:
        self.compose = compose
        self.schemas = store_schemas()
        self.documented: set[str] = set()

    def group_section(self, group: str) -> str:
        """key | meaning | a value per option; algorithm: the meanings, then a table of values."""
        columns = columns_for(self.compose, group)
        keys = group_keys(columns, self.schemas[group], group)
        schemas = schema_list(columns, self.schemas[group])
        notes: set[str] = set()
        header = [c.option for c in columns] if len(columns) > 1 else ["default"]
        self.documented.update(keys)

        def values(key: str, variants: list[tuple[list[str], Key]]) -> list[str]:
            if variants[0][1].node is not None:  # a nested dataclass: its keys follow
                return [""] * len(columns)
            return [cell(c, key, notes) if has_key(c.schema, key, group) else ABSENT for c in columns]

        if group != "algorithm":
            rows = [[f"`{k}`", meaning_cell(v), *values(k, v)] for k, v in keys.items()]
            return schemas + table(["key", "meaning", *header], rows) + spec_note(notes)
        meanings = table(["key", "meaning"], [[f"`{k}`", meaning_cell(v)] for k, v in keys.items()])
        rows = [[f"`{k}`", *values(k, v)] for k, v in keys.items() if v[0][1].node is None]
        intro = (f"Defaults per option (`python train.py algorithm=<option>`, the other groups at their defaults; "
                 f"{ABSENT} = that option's schema has no such key):")
        return schemas + meanings + "\n\n" + intro + "\n\n" + table(["key", *header], rows) + spec_note(notes)

    def plain_section(self, name: str) -> str:
        """A node of the root config that is not a group (diagnostics): key | meaning | default."""
        column = columns_for(self.compose, None)[0]
        node = next(k for k in walk(Config, "") if k.key == name).node
        keys = walk(node, f"{name}.")
        notes: set[str] = set()
        rows = [[f"`{k.key}`", meaning_cell([([], k)]), "" if k.node else cell(column, k.key, notes)]
                for k in keys]
        self.documented.update(k.key for k in keys)
        return table(["key", "meaning", "default"], rows) + spec_note(notes)

    def top_level(self) -> str:
        """The root's fields; a group or section is one row pointing to its section."""
        column = columns_for(self.compose, None)[0]
        choices = self.compose([], hydra=True).hydra.runtime.choices
        notes: set[str] = set()
        rows = []
        for key in walk(Config, ""):
            head = key.key.split(".")[0]
            if head in SECTIONS and key.key != head:
                continue
            if head in SECTIONS:
                option = choices.get(head)
                default = (f"`{option}`, " if option else "") + f"see [{head}](#{head})"
            elif key.node is not None:
                default = cell(column, key.key, notes)
            else:
                default = cell(column, key.key, notes, fallback=key.schema_default)
            rows.append([f"`{key.key}`", meaning_cell([([], key)]), default])
            self.documented.add(key.key)
        return table(["key", "meaning", "default"], rows) + spec_note(notes)


def schema_list(columns: list[Column], schemas: list[type]) -> str:
    """A line naming each schema of a group and its options, when options differ in schema."""
    used = list(dict.fromkeys(c.schema for c in columns))
    if len(used) < 2:
        return ""
    items = [f"`{schema.__name__}` ({', '.join(c.option for c in columns if c.schema is schema)})"
             for schema in used]
    items += [f"`{schema.__name__}` (no option)" for schema in schemas if schema not in used]
    return "Schemas: " + "; ".join(items) + ".\n\n"


def intro(choices: dict[str, str], schema_groups: list[str]) -> str:
    defaults = ", ".join(f"`{g}={choices[g]}`" for g in ("algorithm", "dataset", "arch", "trainer", "logger"))
    # groups whose options only set the keys below (presets), without a schema of their own
    presets = sorted({g.split("/")[0] for g in config_groups(CONF)} - set(schema_groups) - {"spec"})
    presets_text = ", ".join(f"`{g}`" for g in presets)
    return f"""\
# Configuration reference

<!-- Generated by scripts/config_docs.py from the config schemas and conf/: do not edit; run `make docs`. -->

Every key of the configuration, its meaning and its default. Keys are dotted paths; set any of them on
the command line, after the group options:

```bash
python train.py algorithm=dtp dataset=cifar10 arch=conv trainer.epochs=100 algorithm.optimizer.lr=3e-4
python train.py arch.hidden=[512,512] dataset.augment.hflip=true trainer.limit_train_batches=null
```

`python train.py --help` lists the groups and their options (`group=option`, one YAML file each in
`conf/<group>/`); `python train.py --cfg job` prints the composed configuration of a command.
The groups {presets_text} have no keys of their own: their options set
keys of the sections below (or Hydra's settings) at once.
Hydra refuses a key that the schema does not have (a `+key=value` as well) or a value of the wrong type;
impossible values (a negative learning rate, a zero batch size) stop the run before any data is read.

How to read the tables:

- **meaning** is the comment on the field in its schema (`dtp_bench/config.py`,
  `dtp_bench/algorithms/schemas.py`, `dtp_bench/nn/schemas.py`).
- **defaults** are what `python train.py group=option` gives: composed by Hydra from `conf/`, every
  other group at its default:
  {defaults}.
  The defaults list also reads optional per-combination files,
  `conf/spec/algorithm_arch/<algorithm>_<arch>.yaml` and
  `conf/spec/algorithm_dataset/<algorithm>_<dataset>.yaml`, so a value can depend on the other groups.
  The tables document the default composition (the algorithm columns with arch={choices["arch"]} and
  dataset={choices["dataset"]}, the arch and dataset columns with algorithm={choices["algorithm"]}) and mark
  with {SPEC_MARK} a value that such a file sets. Another combination, or an experiment preset
  (`experiment=<paper>/<cell>`, which sets many keys at once), can differ: `--cfg job` shows what a
  command gets.
- Values are written as on the command line: `null`, `true`/`false`, lists as `[256, 256]`,
  `???` for a value that must be given; {ABSENT} where an option's schema has no such key.
"""


SECTION_INTROS = {
    "top": "## Top-level keys\n\nThe groups, each in its own section below, and the keys at the root. "
           "`reference` is null unless an experiment preset sets it; the `reference.*` defaults are the "
           "schema's, for a preset that gives only some of them.",
    "trainer": "## trainer\n\nThe training loop: epochs, batches, device and precision, checkpoints.",
    "dataset": "## dataset\n\nThe data, read from `dataset.root`; one column per option (`dataset=<option>`).",
    "logger": "## logger\n\n`metrics.jsonl` and `summary.json` are always written; a logger adds an external "
              "one. One column per option (`logger=<option>`).",
    "diagnostics": "## diagnostics\n\nNot a group (no options): alignment diagnostics, the learning signal "
                   "and the early activation check, set key by key.",
    "arch": "## arch\n\nThe network; one column per option (`arch=<option>`).",
    "algorithm": "## algorithm\n\nThe learning rule. Where two schemas comment a key differently, both meanings "
                 "are given, each with its options. `algorithm.optimizer` trains the forward weights, "
                 "`algorithm.feedback_optimizer` the feedback weights.",
}


def render() -> tuple[str, int]:
    """The document's text, and how many keys it documents."""
    with Composer() as compose:
        writer = Writer(compose)
        choices = compose([], hydra=True).hydra.runtime.choices
        parts = [intro(choices, list(writer.schemas)).rstrip(), SECTION_INTROS["top"], writer.top_level()]
        for name in SECTIONS:
            parts.append(SECTION_INTROS[name])
            parts.append(writer.plain_section(name) if name == "diagnostics" else writer.group_section(name))
    return "\n\n".join(parts) + "\n", len(writer.documented)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write docs/configuration.md, every config key with its meaning (the comment on its schema "
                    "field) and its default (what Hydra composes from conf/ for each option).")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the file is not what this script would write")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="PATH",
                        help="the file to write or check (default: docs/configuration.md)")
    args = parser.parse_args(argv)
    text, n_keys = render()
    out: Path = args.out
    shown = out.relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    if args.check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            print(f"{shown} is out of date with the config schemas and conf/: run `make docs` "
                  f"(scripts/config_docs.py)", file=sys.stderr)
            return 1
        print(f"{shown} is up to date ({n_keys} keys)")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {shown} ({n_keys} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
