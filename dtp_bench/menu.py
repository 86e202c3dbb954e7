"""What ``python train.py --help`` lists, and the names of output folders (light: no torch).

Hydra lists every option of a group, the typed schemas behind the YAML files included; our help
lists the YAML options only (a schema is not an option: ``algorithm=bp_schema`` is refused in
run()). Both are OmegaConf resolvers registered on import."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"
SCHEMA_SUFFIX = "_schema"


def config_groups(conf: Path = CONF) -> dict[str, list[str]]:
    """{group: [options]} from the YAML files under conf/ (Hydra's own groups excluded)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group == "." or group.split("/")[0] == "hydra" or path.stem.endswith(SCHEMA_SUFFIX):
            continue
        groups.setdefault(group, []).append(path.stem)
    return groups


def groups_help() -> str:
    lines = []
    for group, options in config_groups().items():
        lines.append(f"{group}: {', '.join(options)}")
    # string.Template (Hydra's help) would read a '$' as a placeholder
    return "\n".join(lines).replace("$", "$$")


def schema_choice_problem(choices: dict) -> str | None:
    """A message when a group was set to a schema (``algorithm=bp_schema``), else None."""
    for group, option in choices.items():
        if isinstance(option, str) and option.endswith(SCHEMA_SUFFIX):
            options = ", ".join(config_groups().get(group, []))
            return (f"{group}: '{option}' is the typed schema behind the {group} options, not an option; "
                    f"choose one of: {options}")
    return None


def run_name(experiment, algorithm, dataset, arch) -> str:
    """A folder name that says what ran: the preset (slashes → '+') or algorithm_dataset_arch."""
    if experiment not in (None, "", "null", "None"):
        return str(experiment).replace("/", "+")
    return f"{algorithm}_{dataset}_{arch}"


OmegaConf.register_new_resolver("dtp_groups_help", groups_help, replace=True)
OmegaConf.register_new_resolver("dtp_run_name", run_name, replace=True)
